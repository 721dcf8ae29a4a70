mod common;
use common::*;

#[test]
fn server_answers_health_and_creates_groups() {
    let server = ServerProcess::start(&[]);
    assert_eq!(request(server.addr, "GET", "/healthz", b"").status, 200);
    let id = create_group(server.addr, r#"{"run_count": 2}"#);
    let group = get_group(server.addr, &id);
    assert_eq!(group["run_count"], 2);
    assert_eq!(group["test_runs"].as_array().map(Vec::len), Some(0));
}
