//! ChatKit request bodies from arbitrary bytes: the request type and the full request decode
//! without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = study::chatkit::requests::request_type(data);
    if let Ok(req) = study::chatkit::parse_request(data) {
        let _ = req.is_streaming();
    }
});
