//! The real servers the tests talk to, each started on a free loopback port in its own
//! temporary folder and stopped when dropped: aiosmtpd (SMTP), Radicale (CalDAV), ippeveprinter
//! (IPP, with the private D-Bus it needs), and a TCP sink standing for an ESC/POS printer.

use std::ffi::OsStr;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{free_port, repo_root, system_program, venv_program, wait_for_port, ChildGuard};

/// A running aiosmtpd (`smtp_server.py`) writing every message it takes into a Maildir.
pub struct Smtp {
    pub port: u16,
    pub maildir: PathBuf,
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Smtp {
    /// `args`: more arguments for `smtp_server.py` (`--tls starttls --cert … --key …`,
    /// `--user … --password …`, `--reject ADDR`, `--defer ADDR`).
    pub fn start(args: &[&OsStr]) -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("Maildir");
        let port = free_port();
        let script = repo_root().join("connectors/tests/support/smtp_server.py");
        let mut cmd = Command::new(venv_program("python"));
        cmd.arg(script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--maildir")
            .arg(&maildir)
            .args(args);
        let mut guard = ChildGuard::spawn("smtp_server.py", &mut cmd);
        wait_for_port(&mut guard, port);
        Smtp {
            port,
            maildir,
            _guard: guard,
            _dir: dir,
        }
    }

    /// aiosmtpd speaking `tls` (`none`, `starttls` or `tls`), presenting the certificate and key
    /// of `cert_key`, requiring `auth` (user, password) when given, with `extra` arguments.
    pub fn start_secured(
        tls: &str,
        cert_key: Option<(&Path, &Path)>,
        auth: Option<(&str, &str)>,
        extra: &[&str],
    ) -> Smtp {
        let mut args: Vec<&OsStr> = vec![OsStr::new("--tls"), OsStr::new(tls)];
        if let Some((cert, key)) = cert_key {
            args.extend([
                OsStr::new("--cert"),
                cert.as_os_str(),
                OsStr::new("--key"),
                key.as_os_str(),
            ]);
        }
        if let Some((user, password)) = auth {
            args.extend(["--user", user, "--password", password].map(OsStr::new));
        }
        args.extend(extra.iter().map(OsStr::new));
        Smtp::start(&args)
    }

    /// The messages taken so far, oldest first.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .map(|e| {
                let e = e.unwrap();
                (e.metadata().unwrap().modified().unwrap(), e.path())
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| std::fs::read(p).unwrap())
            .collect()
    }

    /// The one message taken so far.
    pub fn only_message(&self) -> Vec<u8> {
        let mut all = self.messages();
        assert_eq!(all.len(), 1, "expected one message in the Maildir");
        all.remove(0)
    }
}

/// A running Radicale with one user (plain htpasswd), owner-only rights, storage in its folder.
pub struct Radicale {
    pub base: String,
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Radicale {
    pub fn start(user: &str, password: &str) -> Radicale {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let users = dir.path().join("users");
        std::fs::write(&users, format!("{user}:{password}\n")).unwrap();
        let conf = dir.path().join("config");
        std::fs::write(
            &conf,
            format!(
                "[server]\nhosts = 127.0.0.1:{port}\n\n\
                 [auth]\ntype = htpasswd\nhtpasswd_filename = {}\nhtpasswd_encryption = plain\ndelay = 0\n\n\
                 [rights]\ntype = owner_only\n\n\
                 [storage]\nfilesystem_folder = {}\n\n\
                 [logging]\nlevel = info\n",
                users.display(),
                dir.path().join("collections").display()
            ),
        )
        .unwrap();
        let mut guard = ChildGuard::spawn(
            "radicale",
            Command::new(venv_program("radicale"))
                .arg("--config")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("radicale.log")).unwrap()),
        );
        wait_for_port(&mut guard, port);
        Radicale {
            base: format!("http://127.0.0.1:{port}"),
            _guard: guard,
            _dir: dir,
        }
    }
}

/// A running `ippeveprinter` keeping the documents it prints in `spool`.
pub struct Printer {
    pub uri: String,
    pub spool: PathBuf,
    _dir: tempfile::TempDir,
    // Dropped in this order: the printer, then its bus.
    _printer: ChildGuard,
    _bus: ChildGuard,
}

impl Printer {
    /// `formats`: the document formats it accepts (`application/pdf`). The installed
    /// ippeveprinter will not start without D-Bus, even with DNS-SD off (`-r off`): it gets a
    /// private `dbus-daemon` as its system bus. `-n localhost`: with an IP address it fails to
    /// open its IPv6 listener.
    pub fn start(formats: &str) -> Printer {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        let bus_path = dir.path().join("bus");
        let bus_address = format!("unix:path={}", bus_path.display());
        let mut bus = ChildGuard::spawn(
            "dbus-daemon",
            Command::new(system_program("dbus-daemon"))
                .args(["--session", "--nofork", "--nopidfile", "--address"])
                .arg(&bus_address)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bus_path.exists() {
            if let Ok(Some(s)) = bus.child.try_wait() {
                panic!("dbus-daemon exited with {s}");
            }
            assert!(Instant::now() < deadline, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let port = free_port();
        let mut printer = ChildGuard::spawn(
            "ippeveprinter",
            Command::new(system_program("ippeveprinter"))
                .env("DBUS_SYSTEM_BUS_ADDRESS", &bus_address)
                .args(["-p", &port.to_string(), "-d"])
                .arg(&spool)
                .args([
                    "-k",
                    "-r",
                    "off",
                    "-f",
                    formats,
                    "-n",
                    "localhost",
                    "DossierTest",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_port(&mut printer, port);
        Printer {
            uri: format!("ipp://localhost:{port}/ipp/print"),
            spool,
            _dir: dir,
            _printer: printer,
            _bus: bus,
        }
    }

    /// The files the printer kept, after waiting up to 20 s for `n` of them.
    pub fn spooled(&self, n: usize) -> Vec<PathBuf> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&self.spool)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            files.retain(|p| p.is_file());
            files.sort();
            if files.len() >= n || Instant::now() > deadline {
                return files;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A TCP port standing for an ESC/POS receipt printer: keeps every connection's bytes.
pub struct TicketSink {
    pub port: u16,
    pub tickets: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl TicketSink {
    pub fn start() -> TicketSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tickets: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let t = tickets.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut bytes = Vec::new();
                let _ = conn.read_to_end(&mut bytes);
                t.lock().unwrap().push(bytes);
            }
        });
        TicketSink { port, tickets }
    }

    /// The tickets received so far (each connection's bytes, once it closed), after waiting up
    /// to 10 s for `n` of them.
    pub fn received(&self, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let tickets = self.tickets.lock().unwrap().clone();
            if tickets.len() >= n || Instant::now() > deadline {
                return tickets;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
