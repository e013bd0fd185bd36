//! The HTTP gateway end to end: a real testnet (node processes), the gateway it starts, and
//! `curl` as the client, as users of Walrus's publisher and aggregator would drive it.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use floe_node::testing::random_bytes;
use serde_json::Value;

mod common;
use common::{wait_gateway_ready, Testnet};

/// One curl exchange: status, headers (lower-case names) and body.
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
    /// The error body's reason (Walrus's error shape).
    fn reason(&self) -> String {
        self.json()["error"]["details"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn curl(dir: &Path, args: &[&str]) -> Reply {
    let body = dir.join("curl.body");
    let heads = dir.join("curl.headers");
    // curl leaves the output file alone when a response has no body
    let _ = std::fs::remove_file(&body);
    let _ = std::fs::remove_file(&heads);
    let out = Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&heads)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let status: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    let text = std::fs::read_to_string(&heads).unwrap_or_default();
    // the last response's headers (after a 100 Continue, say)
    let last = text
        .rsplit("\r\n\r\n")
        .find(|b| !b.trim().is_empty())
        .unwrap_or("");
    let headers = last
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// Check `v` against schema `s` of the OpenAPI document `doc`: every required property present,
/// no property the schema does not name, types as declared.
fn conforms(doc: &Value, s: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or_default();
        return conforms(doc, &doc["components"]["schemas"][name], v, path);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            return if alts.iter().any(|a| conforms(doc, a, v, path).is_ok()) {
                Ok(())
            } else {
                Err(format!("{path}: {v} matches none of {key}"))
            };
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        return all.iter().try_for_each(|a| conforms(doc, a, v, path));
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let ok_type = types.is_empty()
        || types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
    if !ok_type {
        return Err(format!("{path}: {v} is not {types:?}"));
    }
    if let (Some(props), Some(obj)) = (
        s.get("properties").and_then(Value::as_object),
        v.as_object(),
    ) {
        for req in s["required"].as_array().into_iter().flatten() {
            let k = req.as_str().unwrap_or_default();
            if !obj.contains_key(k) {
                return Err(format!("{path}: required {k:?} missing in {v}"));
            }
        }
        for (k, val) in obj {
            let p = props
                .get(k)
                .ok_or_else(|| format!("{path}: {k:?} is not in the schema"))?;
            conforms(doc, p, val, &format!("{path}.{k}"))?;
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            conforms(doc, items, x, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

/// The schema of `method path`'s 200 answer in the OpenAPI document.
fn response_schema<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let s =
        &doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(!s.is_null(), "no 200 JSON schema for {method} {path}");
    s
}

fn gateway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_floe-gateway"))
}

/// A gateway started by the test, killed on drop.
struct Strict {
    child: Child,
    url: String,
}

impl Drop for Strict {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A second gateway with tight limits, publisher auth, and an account of its own (a new key,
/// unfunded) paying through the testnet's control plane.
fn strict_gateway(nodes: &str, control: &str, dir: &Path) -> Strict {
    let port = free_port();
    std::fs::write(dir.join("jwt.secret"), "a-test-secret-of-some-length").unwrap();
    std::fs::write(dir.join("strict.key"), random_bytes(32, 99)).unwrap();
    let spool = dir.join("strict-spool");
    std::fs::create_dir_all(&spool).unwrap();
    let child = Command::new(gateway_bin())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--nodes", nodes])
        .args([
            "--max-body",
            "4096",
            "--in-memory",
            "1024",
            "--max-concurrent",
            "1",
        ])
        .args(["--body-idle-timeout", "1"])
        .arg("--jwt-secret-file")
        .arg(dir.join("jwt.secret"))
        .args(["--control", control])
        .arg("--account-key")
        .arg(dir.join("strict.key"))
        .arg("--spool-dir")
        .arg(&spool)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let g = Strict {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_gateway_ready(&g.url);
    g
}

/// A gateway without an account: it cannot pay on a network that sells storage.
fn unpaid_gateway(nodes: &str) -> Strict {
    let port = free_port();
    let child = Command::new(gateway_bin())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--nodes", nodes])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let g = Strict {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_gateway_ready(&g.url);
    g
}

/// An HS256 JWT signed with `secret`, valid for an hour.
fn jwt(secret: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[test]
fn gateway_speaks_walrus_http_to_curl() {
    // epochs change only when the test asks (next-epoch), so lifetimes are predictable
    let t = Testnet::up(&["--nodes", "4", "--shards", "10", "--epoch", "600s"]);
    let dir = t.dir.path();
    let status = t.json(&["testnet", "status"]);
    let url = status["gateway"]
        .as_str()
        .expect("testnet status carries the gateway URL")
        .to_string();
    wait_gateway_ready(&url);
    let api = curl(dir, &[&format!("{url}/v1/api")]);
    assert_eq!(api.status, 200);
    let doc = api.json();
    for p in [
        "/v1/blobs",
        "/v1/blobs/{blob_id}",
        "/v1/blobs/{blob_id}/byte-range",
        "/v1/quilts",
        "/v1/quilts/{quilt_id}/patches",
        "/v1/blobs/by-quilt-id/{quilt_id}/{identifier}",
        "/v1/blobs/by-quilt-patch-id/{patch_id}",
        "/status",
    ] {
        assert!(doc["paths"][p].is_object(), "OpenAPI lacks {p}");
    }

    // PUT: newly created, then already certified; the ID is the one `floe blob-id` computes
    let data = random_bytes(100_000, 7);
    let file = t.file("blob.bin", &data);
    let put = curl(
        dir,
        &[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{url}/v1/blobs?epochs=2"),
        ],
    );
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    let v = put.json();
    conforms(&doc, response_schema(&doc, "/v1/blobs", "put"), &v, "put").unwrap();
    let created = &v["newlyCreated"]["blobObject"];
    let id = created["blobId"].as_str().unwrap().to_string();
    assert_eq!(created["size"], 100_000);
    let start = created["storage"]["startEpoch"].as_u64().unwrap();
    assert_eq!(created["storage"]["endEpoch"].as_u64().unwrap(), start + 2);
    // paid from the gateway's account: 100 kB encode to under 1 MiB at n = 10, one unit;
    // storage 100 per epoch, write 20 (the default votes)
    assert_eq!(v["newlyCreated"]["cost"], 2 * 100 + 20, "{v}");
    assert_eq!(
        created["deletable"], true,
        "deletable by default, as floe put"
    );
    let offline = t.json(&["blob-id", file.to_str().unwrap(), "--shards", "10"]);
    assert_eq!(offline["blob_id"], id.as_str());
    let again = curl(
        dir,
        &[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{url}/v1/blobs"),
        ],
    );
    let v = again.json();
    conforms(
        &doc,
        response_schema(&doc, "/v1/blobs", "put"),
        &v,
        "put again",
    )
    .unwrap();
    assert_eq!(v["alreadyCertified"]["blobId"], id.as_str(), "{v}");
    // without `epochs` the default 5 applies: the gateway bought the epochs beyond the first
    // registration's end, and reports the lifetime's real end
    let end = v["alreadyCertified"]["endEpoch"].as_u64().unwrap();
    assert_eq!(end, start + 5, "{v}");
    // the end epoch is the control plane's: extending by one (with the gateway's own key, as
    // its operator would) ends one later
    let gateway_key = dir.join("gateway.key");
    let ext = t.json(&[
        "--account-file",
        gateway_key.to_str().unwrap(),
        "extend",
        &id,
        "--epochs",
        "1",
    ]);
    assert_eq!(ext["end_epoch"].as_u64(), Some(end + 1), "{ext}");
    // concurrent PUTs: their registrations go out in order and batched, none refuses
    // another's nonce, and the account paid exactly what the answers say
    let balance = || {
        t.json(&[
            "--account-file",
            gateway_key.to_str().unwrap(),
            "account",
            "balance",
        ])["balance"]
            .as_u64()
            .unwrap()
    };
    let before = balance();
    let puts: Vec<_> = (0..12u64)
        .map(|i| {
            let f = t.file(&format!("c{i}.bin"), &random_bytes(20_000, 100 + i));
            Command::new("curl")
                .args(["-sS", "-X", "PUT", "--data-binary"])
                .arg(format!("@{}", f.display()))
                .args(["-w", "\n%{http_code}"])
                .arg(format!("{url}/v1/blobs?epochs=3"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut paid = 0;
    for p in puts {
        let out = String::from_utf8(p.wait_with_output().unwrap().stdout).unwrap();
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, "200", "{body}");
        let v: Value = serde_json::from_str(body).unwrap();
        let cost = v["newlyCreated"]["cost"].as_u64().unwrap();
        assert_eq!(cost, 3 * 100 + 20, "{v}");
        paid += cost;
    }
    assert_eq!(before - balance(), paid);
    let st = curl(dir, &[&format!("{url}/status")]).json();
    assert_eq!(st["sellsStorage"], true, "{st}");
    assert!(
        st["publisherAccount"]
            .as_str()
            .is_some_and(|a| a.len() == 64),
        "{st}"
    );

    // permanent and deletable as asked
    for (q, deletable, seed) in [
        ("permanent=true", false, 71),
        ("deletable=false", false, 72),
        ("deletable=true", true, 73),
    ] {
        let f = t.file(&format!("p{seed}.bin"), &random_bytes(1000, seed));
        let r = curl(
            dir,
            &[
                "-X",
                "PUT",
                "--data-binary",
                &format!("@{}", f.display()),
                &format!("{url}/v1/blobs?{q}&epochs=2"),
            ],
        );
        assert_eq!(r.status, 200, "{q}: {}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(
            v["newlyCreated"]["blobObject"]["deletable"], deletable,
            "{q}: {v}"
        );
    }

    // GET whole, with the headers caches and browsers rely on
    let blob_url = format!("{url}/v1/blobs/{id}");
    let get = curl(dir, &[&blob_url]);
    assert_eq!(get.status, 200);
    assert!(get.body == data, "GET returned other bytes");
    assert_eq!(get.header("etag"), format!("\"{id}\""));
    assert_eq!(get.header("accept-ranges"), "bytes");
    assert_eq!(get.header("x-content-type-options"), "nosniff");
    assert!(get.header("cache-control").contains("immutable"));
    assert_eq!(get.header("content-type"), "application/octet-stream");
    assert_eq!(get.header("content-length"), "100000");
    let typed = curl(dir, &["-H", "Accept: image/png", &blob_url]);
    assert_eq!(typed.header("content-type"), "image/png");
    // the same bytes as `floe get`
    assert!(t.get(&id) == data);

    // HEAD: the size, no body
    let head = curl(dir, &["-I", &blob_url]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), "100000");

    // every form of Range
    let n = data.len();
    for (range, want) in [
        ("bytes=0-0", 0..1),
        ("bytes=10-19", 10..20),
        ("bytes=99990-", 99_990..n),
        ("bytes=-25", n - 25..n),
        ("bytes=50000-999999", 50_000..n),
        ("bytes=-999999", 0..n),
    ] {
        let r = curl(dir, &["-H", &format!("Range: {range}"), &blob_url]);
        assert_eq!(r.status, 206, "{range}");
        assert!(r.body == data[want.clone()], "{range}: wrong bytes");
        assert_eq!(
            r.header("content-range"),
            format!("bytes {}-{}/{n}", want.start, want.end - 1),
            "{range}"
        );
    }
    let r = curl(dir, &["-H", "Range: bytes=100000-", &blob_url]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), "bytes */100000");
    let r = curl(dir, &["-H", "Range: bytes=9-1", &blob_url]);
    assert_eq!((r.status, r.reason().as_str()), (400, "INVALID_RANGE"));
    let r = curl(dir, &[&format!("{blob_url}/byte-range?start=5&length=10")]);
    assert_eq!(r.status, 206);
    assert!(r.body == data[5..15]);
    let r = curl(dir, &[&format!("{blob_url}/byte-range?start=5")]);
    assert_eq!((r.status, r.reason().as_str()), (400, "INVALID_QUERY"));

    // ETag revalidation: nothing fetched, nothing sent
    let r = curl(dir, &["-H", &format!("If-None-Match: \"{id}\""), &blob_url]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());

    // unknown and malformed IDs
    let unknown = floe_node::codec::BlobId([7u8; 32]).to_string();
    let r = curl(dir, &[&format!("{url}/v1/blobs/{unknown}")]);
    assert_eq!((r.status, r.reason().as_str()), (404, "BLOB_NOT_FOUND"));
    let r = curl(dir, &[&format!("{url}/v1/blobs/not*base64")]);
    assert_eq!((r.status, r.reason().as_str()), (400, "INVALID_BLOB_ID"));
    let r = curl(
        dir,
        &[
            "-X",
            "PUT",
            "--data-binary",
            "x",
            &format!("{url}/v1/blobs?epochs=0"),
        ],
    );
    assert_eq!((r.status, r.reason().as_str()), (400, "INVALID_EPOCHS"));
    // beyond the maximum the committee publishes (53 ahead)
    let r = curl(
        dir,
        &[
            "-X",
            "PUT",
            "--data-binary",
            "x",
            &format!("{url}/v1/blobs?epochs=54"),
        ],
    );
    assert_eq!((r.status, r.reason().as_str()), (400, "INVALID_EPOCHS"));
    let r = curl(
        dir,
        &[
            "-X",
            "PUT",
            "--data-binary",
            "x",
            &format!("{url}/v1/blobs?deletable=true&permanent=true"),
        ],
    );
    assert_eq!(
        (r.status, r.reason().as_str()),
        (400, "INVALID_BLOB_PERSISTENCE")
    );
    let r = curl(
        dir,
        &[
            "-X",
            "PUT",
            "--data-binary",
            "x",
            &format!("{url}/v1/blobs?colour=red"),
        ],
    );
    assert_eq!((r.status, r.reason().as_str()), (400, "INVALID_QUERY"));

    // quilts through multipart, with tags from _metadata and from the parts' content types
    let a = t.file("a.txt", b"alpha file");
    let b = t.file("b.json", br#"{"b":1}"#);
    let c_data = random_bytes(30_000, 9);
    let c = t.file("c.bin", &c_data);
    let meta = r#"[{"identifier":"a.txt","tags":{"color":"blue"}}]"#;
    let put = curl(
        dir,
        &[
            "-X",
            "PUT",
            "-F",
            &format!("a.txt=@{};type=text/plain", a.display()),
            "-F",
            &format!("b.json=@{};type=application/json", b.display()),
            "-F",
            &format!("c.bin=@{}", c.display()),
            "-F",
            &format!("_metadata={meta}"),
            &format!("{url}/v1/quilts"),
        ],
    );
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    let v = put.json();
    conforms(
        &doc,
        response_schema(&doc, "/v1/quilts", "put"),
        &v,
        "quilt",
    )
    .unwrap();
    let quilt = v["blobStoreResult"]["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .unwrap()
        .to_string();
    // a quilt is paid like a blob: one unit for the default 5 epochs
    assert_eq!(
        v["blobStoreResult"]["newlyCreated"]["cost"],
        5 * 100 + 20,
        "{v}"
    );
    let patches = v["storedQuiltBlobs"].as_array().unwrap().clone();
    assert_eq!(patches.len(), 3);
    let list = curl(dir, &[&format!("{url}/v1/quilts/{quilt}/patches")]);
    let lv = list.json();
    conforms(
        &doc,
        response_schema(&doc, "/v1/quilts/{quilt_id}/patches", "get"),
        &lv,
        "patches",
    )
    .unwrap();
    assert_eq!(lv[0]["identifier"], "a.txt");
    assert_eq!(lv[0]["tags"]["color"], "blue");
    assert_eq!(lv[0]["tags"]["content-type"], "text/plain");
    assert_eq!(lv[2]["size"], 30_000);
    let r = curl(dir, &[&format!("{url}/v1/blobs/by-quilt-id/{quilt}/a.txt")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"alpha file");
    assert_eq!(r.header("content-type"), "text/plain");
    assert_eq!(r.header("x-quilt-patch-identifier"), "a.txt");
    let pid = patches[2]["quiltPatchId"].as_str().unwrap();
    let r = curl(dir, &[&format!("{url}/v1/blobs/by-quilt-patch-id/{pid}")]);
    assert_eq!(r.status, 200);
    assert!(r.body == c_data);
    let r = curl(
        dir,
        &[
            "-H",
            "Range: bytes=-100",
            &format!("{url}/v1/blobs/by-quilt-patch-id/{pid}"),
        ],
    );
    assert_eq!(r.status, 206);
    assert!(r.body == c_data[c_data.len() - 100..]);
    let r = curl(
        dir,
        &[&format!("{url}/v1/blobs/by-quilt-id/{quilt}/nope.txt")],
    );
    assert_eq!(
        (r.status, r.reason().as_str()),
        (404, "QUILT_PATCH_NOT_FOUND")
    );
    let r = curl(dir, &[&format!("{url}/v1/blobs/by-quilt-patch-id/AAAA")]);
    assert_eq!((r.status, r.reason().as_str()), (400, "INVALID_PATCH_ID"));
    // a blob that is not a quilt
    let r = curl(dir, &[&format!("{url}/v1/quilts/{id}/patches")]);
    assert_eq!((r.status, r.reason().as_str()), (400, "NOT_A_QUILT"));

    // malformed multipart and bad metadata: refused, nothing stored
    let r = curl(
        dir,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: multipart/form-data; boundary=XYZ",
            "--data-binary",
            "--XYZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nunterminated",
            &format!("{url}/v1/quilts"),
        ],
    );
    assert_eq!(
        (r.status, r.reason().as_str()),
        (400, "MALFORMED_MULTIPART"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = curl(
        dir,
        &[
            "-X",
            "PUT",
            "-F",
            &format!("a.txt=@{}", a.display()),
            "-F",
            "_metadata=[{\"identifier\":\"zzz\"}]",
            &format!("{url}/v1/quilts"),
        ],
    );
    assert_eq!((r.status, r.reason().as_str()), (400, "INVALID_METADATA"));
    let r = curl(
        dir,
        &[
            "-X",
            "PUT",
            "-F",
            "_metadata=[]",
            &format!("{url}/v1/quilts"),
        ],
    );
    assert_eq!((r.status, r.reason().as_str()), (400, "EMPTY_QUILT"));

    // metrics by route and status
    let m = String::from_utf8(curl(dir, &[&format!("{url}/metrics")]).body).unwrap();
    assert!(
        m.lines()
            .any(|l| l.starts_with("floe_gateway_requests_total")
                && l.contains("route=\"/v1/blobs/{blob_id}\"")
                && l.contains("status=\"206\"")),
        "{m}"
    );
    assert!(m.contains("floe_gateway_request_duration_seconds_bucket"));
    assert!(m
        .lines()
        .any(|l| l.starts_with("floe_gateway_bytes_total{direction=\"out\"}")));

    // a strict gateway: publisher auth, body limit, concurrency, stalled and cut uploads
    let nodes: Vec<String> = t.state()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let g = n["grpc"].as_str().unwrap();
            if n["tls"].as_bool().unwrap_or(false) {
                format!("https://{g}")
            } else {
                g.to_string()
            }
        })
        .collect();
    let control = t.state()["control_api"].as_str().unwrap().to_string();
    // a gateway with no account cannot store on a network that sells storage: 503, nothing
    // stored
    {
        let u = unpaid_gateway(&nodes.join(","));
        let f = t.file("unpaid.bin", &random_bytes(3000, 13));
        let r = curl(
            dir,
            &[
                "-X",
                "PUT",
                "--data-binary",
                &format!("@{}", f.display()),
                &format!("{}/v1/blobs", u.url),
            ],
        );
        assert_eq!(
            (r.status, r.reason().as_str()),
            (503, "NO_PUBLISHER_ACCOUNT")
        );
    }
    let s = strict_gateway(&nodes.join(","), &control, dir);
    let small = t.file("small.bin", &random_bytes(2000, 11));
    let put_small = |extra: &[&str]| {
        let mut args = vec!["-X", "PUT", "--data-binary"];
        let at = format!("@{}", small.display());
        let u = format!("{}/v1/blobs", s.url);
        args.push(&at);
        args.extend_from_slice(extra);
        args.push(&u);
        curl(dir, &args)
    };
    let r = put_small(&[]);
    assert_eq!((r.status, r.reason().as_str()), (401, "UNAUTHENTICATED"));
    assert_eq!(r.header("www-authenticate"), "Bearer");
    let r = put_small(&["-H", "Authorization: Bearer not-a-token"]);
    assert_eq!(r.status, 401);
    let wrong = format!(
        "Authorization: Bearer {}",
        jwt("some-other-secret-entirely")
    );
    assert_eq!(put_small(&["-H", &wrong]).status, 401);
    let good = format!(
        "Authorization: Bearer {}",
        jwt("a-test-secret-of-some-length")
    );
    // its account holds nothing: 402 with the control plane's reason, nothing charged or stored
    let r = put_small(&["-H", &good]);
    assert_eq!(
        (r.status, r.reason().as_str()),
        (402, "INSUFFICIENT_BALANCE"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("insufficient balance"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let small_id = t.json(&["blob-id", small.to_str().unwrap(), "--shards", "10"])["blob_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = curl(dir, &[&format!("{}/v1/blobs/{small_id}", s.url)]);
    assert_eq!(r.status, 404, "a refused registration stored something");
    // funded by the faucet, the same request succeeds
    let account = curl(dir, &[&format!("{}/status", s.url)]).json()["publisherAccount"]
        .as_str()
        .unwrap()
        .to_string();
    t.ok(&["testnet", "faucet", "--account", &account]);
    let r = put_small(&["-H", &good]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // what the publisher paid, in its metrics
    let cost = r.json()["newlyCreated"]["cost"].as_u64().unwrap();
    let m = String::from_utf8(curl(dir, &[&format!("{}/metrics", s.url)]).body).unwrap();
    for line in [
        "floe_gateway_registrations_total{outcome=\"insufficient_balance\"} 1".to_string(),
        "floe_gateway_registrations_total{outcome=\"registered\"} 1".to_string(),
        format!("floe_gateway_paid_units_total {cost}"),
    ] {
        assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
    }
    // reads need no token
    let sid = r.json()["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        curl(dir, &[&format!("{}/v1/blobs/{sid}", s.url)]).status,
        200
    );
    // over the body limit
    let big = t.file("big.bin", &random_bytes(5000, 12));
    let r = curl(
        dir,
        &[
            "-X",
            "PUT",
            "-H",
            &good,
            "--data-binary",
            &format!("@{}", big.display()),
            &format!("{}/v1/blobs", s.url),
        ],
    );
    assert_eq!((r.status, r.reason().as_str()), (413, "BLOB_TOO_LARGE"));

    // an upload that stalls holds the only slot: a second request gets 429, the stalled one 408
    let host = s.url.trim_start_matches("http://").to_string();
    let mut stalled = TcpStream::connect(&host).unwrap();
    let token = jwt("a-test-secret-of-some-length");
    write!(
        stalled,
        "PUT /v1/blobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 3000\r\n\r\n"
    )
    .unwrap();
    stalled.write_all(&[1u8; 1500]).unwrap();
    // the gateway holds the stalled request's slot until the idle timeout; meanwhile others
    // are refused. Poll for the 429 (the stalled request must have been admitted first).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_429 = false;
    while Instant::now() < deadline && !saw_429 {
        let r = curl(dir, &[&format!("{}/v1/blobs/{sid}", s.url)]);
        saw_429 = r.status == 429 && r.reason() == "TOO_MANY_REQUESTS";
    }
    assert!(saw_429, "no 429 while the only slot was taken");
    stalled
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // a cut upload: the connection closes mid-body; nothing is stored and no spool file stays
    let mut cut = TcpStream::connect(&host).unwrap();
    write!(
        cut,
        "PUT /v1/blobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 3000\r\n\r\n"
    )
    .unwrap();
    cut.write_all(&[2u8; 2000]).unwrap();
    drop(cut);
    let would_be = {
        let p = t.file("cut.bin", &[2u8; 2000]);
        t.json(&["blob-id", p.to_str().unwrap(), "--shards", "10"])["blob_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // the server notices the cut at once; poll until it serves again, then check nothing stayed
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl(dir, &[&format!("{}/status", s.url)]).status != 200 {
        assert!(Instant::now() < deadline);
    }
    let r = curl(dir, &[&format!("{}/v1/blobs/{would_be}", s.url)]);
    assert_eq!(r.status, 404, "a partial upload was stored");
    let left: Vec<_> = std::fs::read_dir(dir.join("strict-spool"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "spool files left: {left:?}");
    drop(s);

    // lifetimes: a blob stored for one epoch is 410 Gone ("expired") once it ended, whole,
    // ranged, HEAD and as a quilt file; a deleted one is 410 "deleted"
    let short = t.file("short.bin", &random_bytes(5000, 21));
    let r = curl(
        dir,
        &[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", short.display()),
            &format!("{url}/v1/blobs?epochs=1"),
        ],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let short_id = v["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .unwrap()
        .to_string();
    let short_end = v["newlyCreated"]["blobObject"]["storage"]["endEpoch"]
        .as_u64()
        .unwrap();
    let gone = curl(
        dir,
        &[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", t.file("del.bin", &random_bytes(5000, 22)).display()),
            &format!("{url}/v1/blobs?deletable=true"),
        ],
    );
    let del_id = gone.json()["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        curl(dir, &[&format!("{url}/v1/blobs/{del_id}")]).status,
        200
    );
    t.ok(&[
        "--account-file",
        gateway_key.to_str().unwrap(),
        "delete",
        &del_id,
    ]);
    let r = t.wait(30, "the deleted blob to stop being served", |_| {
        let r = curl(dir, &[&format!("{url}/v1/blobs/{del_id}")]);
        (r.status != 200).then_some(r)
    });
    assert_eq!(
        (r.status, r.reason().as_str()),
        (410, "BLOB_DELETED"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("deleted"));

    while t.control()["epoch"].as_u64().unwrap() < short_end {
        t.ok(&["testnet", "next-epoch"]);
    }
    let short_url = format!("{url}/v1/blobs/{short_id}");
    let r = t.wait(60, "the expired blob to be refused with 410", |_| {
        let r = curl(dir, &[&short_url]);
        (r.status == 410).then_some(r)
    });
    assert_eq!(
        (r.status, r.reason().as_str()),
        (410, "BLOB_EXPIRED"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    assert_eq!(curl(dir, &["-I", &short_url]).status, 410);
    let r = curl(dir, &["-H", "Range: bytes=0-9", &short_url]);
    assert_eq!(r.status, 410);
    // the quilt was stored for the default 5 epochs: still served
    let r = curl(dir, &[&format!("{url}/v1/blobs/by-quilt-id/{quilt}/a.txt")]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// A publisher account given wrongly stops the gateway at start with the reason, before it
/// serves anything: a control address without a key (or the reverse), a key file that is not
/// one, a key file that does not exist.
#[test]
fn a_bad_publisher_account_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, b"12345").unwrap();
    let missing = dir.path().join("missing.key");
    let listen = format!("127.0.0.1:{}", free_port());
    let base = ["--listen", listen.as_str(), "--nodes", "127.0.0.1:1"];
    for (extra, says) in [
        (vec!["--control", "127.0.0.1:1"], "--account-key"),
        (vec!["--account-key", short.to_str().unwrap()], "--control"),
        (
            vec![
                "--control",
                "127.0.0.1:1",
                "--account-key",
                short.to_str().unwrap(),
            ],
            "is not an account key (expected 32 bytes, found 5)",
        ),
        (
            vec![
                "--control",
                "127.0.0.1:1",
                "--account-key",
                missing.to_str().unwrap(),
            ],
            "reading the account key",
        ),
    ] {
        let out = Command::new(gateway_bin())
            .args(base)
            .args(&extra)
            .env_remove("FLOE_GATEWAY_CONTROL")
            .env_remove("FLOE_GATEWAY_ACCOUNT_KEY")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} started");
        assert!(err.contains(says), "{extra:?}: {err}");
    }
}
