//! `[server.proxy_protocol]` and `[cluster]`: what they build, and their errors, located.
use super::*;

fn config(tail: &str) -> String {
    let root = std::env::temp_dir().display().to_string();
    format!(
        "[server]\nlisten = [\"127.0.0.11:2121\", \"127.0.0.11:2990\"]\n\n\
         [site]\nroot = {root:?}\nanonymous = true\n\n{tail}"
    )
}

fn errors(text: &str) -> Vec<ConfigError> {
    ServerConfig::from_toml_str(text, "node.toml")
        .unwrap_err()
        .0
}

#[test]
fn proxy_protocol_and_cluster_build_their_rules() {
    let text = config(
        "[server.proxy_protocol]\nfrom = [\"10.0.0.5\", \"10.1.0.0/16\"]\n\
         addresses = [\"127.0.0.11:2121\"]\nheader_timeout = 3\n\n\
         [cluster]\nredis = \"redis://10.0.0.20:6379/\"\n",
    );
    let cfg = ServerConfig::from_toml_str(&text, "node.toml").unwrap();
    let proxy = &cfg.server_rules.proxy;
    assert_eq!(proxy.from.len(), 2);
    assert!(proxy.trusts("10.1.2.3".parse().unwrap()));
    assert!(proxy.expects_header("127.0.0.11:2121".parse().unwrap()));
    assert!(!proxy.expects_header("127.0.0.11:2990".parse().unwrap()));
    assert_eq!(proxy.header_timeout, Duration::from_secs(3));
    let cluster = cfg.cluster.unwrap();
    assert_eq!(cluster.redis, "redis://10.0.0.20:6379/");
    assert_eq!(cluster.prefix, "wharf");
    let plain = ServerConfig::from_toml_str(&config(""), "node.toml").unwrap();
    assert!(!plain
        .server_rules
        .proxy
        .expects_header("127.0.0.11:2121".parse().unwrap()));
    assert!(plain.cluster.is_none());
}

#[test]
fn bad_proxy_and_cluster_settings_are_located() {
    let cases = [
        (
            "[server.proxy_protocol]\nheader_timeout = 3\n",
            "server.proxy_protocol",
            "needs `from`",
        ),
        (
            "[server.proxy_protocol]\nfrom = [\"10.0.0.300\"]\n",
            "server.proxy_protocol.from",
            "10.0.0.300",
        ),
        (
            "[server.proxy_protocol]\nfrom = [\"10.0.0.5\"]\naddresses = [\"127.0.0.12:2121\"]\n",
            "server.proxy_protocol.addresses",
            "not a control address of this server",
        ),
        (
            "[server.proxy_protocol]\nfrom = [\"10.0.0.5\"]\nheader_timeout = 0\n",
            "server.proxy_protocol.header_timeout",
            "at least 1 second",
        ),
        (
            "[cluster]\nredis = \"10.0.0.20:6379\"\n",
            "cluster.redis",
            "not a Redis URL",
        ),
        ("[cluster]\nprefix = \"a\"\n", "cluster", "redis"),
    ];
    for (tail, key, says) in cases {
        let e = errors(&config(tail));
        assert_eq!(e.len(), 1, "{tail}: {e:?}");
        assert!(
            e[0].key.as_deref().is_some_and(|k| k.starts_with(key)),
            "{tail}: key {:?}",
            e[0].key
        );
        assert!(e[0].message.contains(says), "{tail}: {}", e[0].message);
    }
}
