//! Every client and peer input path of the TURN state machine; see
//! `demarc_relay::fuzz` for how the bytes are read.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    demarc_relay::fuzz::run(data);
});
