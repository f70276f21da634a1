//! Page tokens, cursors and addresses are read from whatever a client sends: any input
//! must be refused with an error or read back to the same value, never panic; any
//! message is free of control characters.

#![no_main]

use alloy_primitives::Address;
use libfuzzer_sys::fuzz_target;
use query_service::input::{self, Cursor, PageToken, Seal, TransferPage};

const TOKEN: Address = Address::repeat_byte(0x42);

fuzz_target!(|data: &[u8]| {
    let seal = Seal::new(b"the fuzzer's key, thirty-two b..");
    let seal = &seal;
    let text = String::from_utf8_lossy(data);
    if let Ok(page) = PageToken::decode(&text, TOKEN, seal) {
        assert_eq!(PageToken::decode(&page.encode(seal), TOKEN, seal).ok(), Some(page));
    }
    if let Ok(cursor) = Cursor::decode(&text, 1, TOKEN, seal) {
        assert_eq!(Cursor::decode(&cursor.encode(seal), 1, TOKEN, seal).ok(), Some(cursor));
    }
    if let Ok(page) = TransferPage::decode(&text, TOKEN, seal) {
        assert_eq!(TransferPage::decode(&page.encode(seal), TOKEN, seal).ok(), Some(page));
    }
    if let Ok(address) = input::address("address", &text) {
        assert_eq!(input::address("address", &address.to_checksum(None)).ok(), Some(address));
    }
    if let Err(e) = input::token(&text) {
        assert!(!e.to_string().chars().any(char::is_control), "{e:?}");
    }
});
