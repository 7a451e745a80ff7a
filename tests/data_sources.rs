//! Participants reading real sources besides CSV: PostgreSQL (a server the test starts,
//! `common::pg`) and Parquet files.

mod common;

use common::pg::PgServer;

#[test]
fn pg_harness_starts_a_server_that_answers_queries() {
    let Some(pg) = PgServer::start("pg_harness_starts_a_server_that_answers_queries") else {
        return;
    };
    pg.exec("create table t (id text, x double precision); insert into t values ('a', 1.5), ('b', null)");
    assert_eq!(
        pg.query("select id, x from t order by id"),
        [vec!["a".to_string(), "1.5".to_string()], vec!["b".to_string(), String::new()]]
    );
    assert!(pg.exec_err("select nope from t").contains("nope"));
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    std::fs::write(&csv, "id,x\nc,2\n").unwrap();
    pg.copy_csv("t", &csv);
    assert_eq!(pg.query("select count(*) from t"), [vec!["3".to_string()]]);
    assert!(pg.url().starts_with("postgresql://postgres@127.0.0.1:"));
}
