//! Page tokens, cursors and addresses are read from whatever a client sends: any input
//! must be refused with an error or read back to the same value, never panic.

#![no_main]

use alloy_primitives::Address;
use libfuzzer_sys::fuzz_target;
use query_service::input::{self, Cursor, PageToken, TransferPage};

const TOKEN: Address = Address::repeat_byte(0x42);

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(page) = PageToken::decode(&text, TOKEN) {
        assert_eq!(PageToken::decode(&page.encode(), TOKEN).ok(), Some(page));
    }
    if let Ok(cursor) = Cursor::decode(&text, TOKEN) {
        assert_eq!(Cursor::decode(&cursor.encode(), TOKEN).ok(), Some(cursor));
    }
    if let Ok(page) = TransferPage::decode(&text, TOKEN) {
        assert_eq!(TransferPage::decode(&page.encode(), TOKEN).ok(), Some(page));
    }
    if let Ok(address) = input::address("address", &text) {
        assert_eq!(input::address("address", &address.to_checksum(None)).ok(), Some(address));
    }
    let _ = input::token(&text);
});
