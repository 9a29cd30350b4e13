//! ESC/POS tickets (being written).
