//! Integration tests of remix-mytest: every test starts real MariaDB servers.

use remix_mytest::{MyOptions, MyServer};
use std::net::TcpStream;
use std::thread;

#[test]
fn two_servers_start_in_parallel_with_the_binlog_on() {
    let handles: Vec<_> = (0..2)
        .map(|i| {
            thread::spawn(move || {
                let my = MyServer::start();
                my.create_db("shop");
                my.sql("shop", &format!("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES ({i}, 'server {i}')"));
                my
            })
        })
        .collect();
    let servers: Vec<MyServer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let (a, b) = (&servers[0], &servers[1]);
    assert_ne!(a.port(), b.port());
    assert_ne!(a.server_id(), b.server_id());
    assert_eq!(a.sql("shop", "SELECT v FROM t"), "server 0");
    assert_eq!(b.sql("shop", "SELECT v FROM t"), "server 1");
    for my in [a, b] {
        assert_eq!(my.sql("", "SELECT @@log_bin, @@binlog_format, @@binlog_row_image"), "1\tROW\tFULL");
        assert_eq!(my.sql("", "SELECT @@server_id"), my.server_id().to_string());
        assert!(TcpStream::connect(("127.0.0.1", my.port())).is_ok());
    }
}

#[test]
fn stop_kill_restart_keep_committed_data_and_drop_removes_everything() {
    let mut my = MyServer::start_with(MyOptions::new().arg("--gtid-strict-mode=ON"));
    my.create_db("d");
    my.sql("d", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)");
    my.stop();
    assert!(!my.is_running());
    assert!(my.try_sql("", "SELECT 1").is_err());
    my.restart();
    my.sql("d", "INSERT INTO t VALUES (2)");
    my.kill();
    my.restart();
    assert_eq!(my.sql("d", "SELECT count(*) FROM t"), "2");
    assert_eq!(my.sql("", "SELECT @@gtid_strict_mode"), "1");
    let dir = my.data_dir().parent().unwrap().to_path_buf();
    drop(my);
    assert!(!dir.exists());
}

#[test]
fn binlog_can_be_off() {
    let my = MyServer::start_with(MyOptions { no_binlog: true, ..MyOptions::default() });
    assert_eq!(my.sql("", "SELECT @@log_bin"), "0");
}
