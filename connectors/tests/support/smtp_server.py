"""A real SMTP server (aiosmtpd) for the email connector's tests, on 127.0.0.1.

Each message taken is written, byte for byte as the client sent it, into a Maildir, preceded
by headers telling what the server saw of the session:
  X-Test-Mail-From: the envelope sender (MAIL FROM)
  X-Test-Rcpt-To:   the envelope recipients (RCPT TO), comma separated
  X-Test-Tls:       the TLS version of the connection, or "none"
  X-Test-Auth:      the user who authenticated, or "none"

  python smtp_server.py --port 2525 --maildir DIR [--tls none|starttls|tls --cert C --key K]
                        [--user U --password P] [--reject ADDR]... [--defer ADDR]...

--tls starttls offers STARTTLS and requires it before anything else; --tls tls speaks TLS from
the first byte. With --user, AUTH (PLAIN, LOGIN) is required before MAIL, and is only offered
over TLS when TLS is on. --reject ADDR answers 550 to RCPT TO:<ADDR>, --defer ADDR answers 451.
"""

import argparse
import asyncio
import logging
import mailbox
import ssl
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--maildir", required=True)
    p.add_argument("--tls", choices=["none", "starttls", "tls"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--reject", action="append", default=[])
    p.add_argument("--defer", action="append", default=[])
    args = p.parse_args()
    if args.tls != "none" and not (args.cert and args.key):
        p.error("--tls starttls|tls needs --cert and --key")
    if bool(args.user) != bool(args.password):
        p.error("--user and --password go together")
    return args


class Handler:
    def __init__(self, maildir, reject, defer):
        self.maildir = mailbox.Maildir(maildir, create=True)
        self.reject = {a.lower() for a in reject}
        self.defer = {a.lower() for a in defer}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.reject:
            return f"550 5.1.1 <{address}>: mailbox unknown"
        if address.lower() in self.defer:
            return f"451 4.3.0 <{address}>: try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        ssl_object = server.transport.get_extra_info("ssl_object")
        tls = ssl_object.version() if ssl_object is not None else "none"
        user = session.auth_data.login.decode() if session.authenticated else "none"
        seen = (
            f"X-Test-Mail-From: {envelope.mail_from}\r\n"
            f"X-Test-Rcpt-To: {', '.join(envelope.rcpt_tos)}\r\n"
            f"X-Test-Tls: {tls}\r\n"
            f"X-Test-Auth: {user}\r\n"
        ).encode()
        self.maildir.add(seen + envelope.original_content)
        return "250 2.0.0 Message accepted for delivery"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return check


async def main():
    args = parse_args()
    # aiosmtpd warns about AUTH over implicit TLS, which it does not recognise as TLS.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    handler = Handler(args.maildir, args.reject, args.defer)
    context = None
    if args.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    kwargs = {"hostname": "localhost", "timeout": 30}
    if args.tls == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    if args.user:
        kwargs.update(
            authenticator=authenticator(args.user, args.password),
            auth_required=True,
            # With implicit TLS aiosmtpd does not know the connection is encrypted.
            auth_require_tls=args.tls == "starttls",
        )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, **kwargs),
        host="127.0.0.1",
        port=args.port,
        ssl=context if args.tls == "tls" else None,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
