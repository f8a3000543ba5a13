//! Server-side builds (`flare fn create --src`): a source directory built
//! in a sandbox whose one way out is the operator's registries, here
//! package indexes on loopback that the test serves itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// A static HTTP server of `dir` on a free loopback port, stopped when
/// dropped.
struct Index {
    child: Child,
    port: u16,
}

impl Index {
    fn serve(dir: &Path) -> Index {
        let port = common::nats::free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        common::eventually(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Index { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/simple", self.port)
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PEP 503 index under `dir` with one pure-Python wheel of `project`,
/// whose module `project` holds `VALUE = value`.
fn index_with(dir: &Path, project: &str, value: &str) {
    let wheel_name = format!("{project}-0.1-py3-none-any.whl");
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::create_dir_all(dir.join("simple").join(project)).unwrap();
    let file = std::fs::File::create(dir.join("files").join(&wheel_name)).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let info = format!("{project}-0.1.dist-info");
    for (name, text) in [
        (
            format!("{project}/__init__.py"),
            format!("VALUE = {value:?}\n"),
        ),
        (
            format!("{info}/METADATA"),
            format!("Metadata-Version: 2.1\nName: {project}\nVersion: 0.1\n"),
        ),
        (
            format!("{info}/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: flare-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_string(),
        ),
        (
            format!("{info}/RECORD"),
            format!(
                "{project}/__init__.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n"
            ),
        ),
    ] {
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
    std::fs::write(
        dir.join("simple").join(project).join("index.html"),
        format!(
            "<html><body><a href=\"../../files/{wheel_name}\">{wheel_name}</a></body></html>\n"
        ),
    )
    .unwrap();
}

/// A Python source directory: main.py answers `module.VALUE`.
fn python_source(dir: &Path, module: &str, requirements: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("main.py"),
        format!("import {module}\n\n\ndef main(req):\n    return {module}.VALUE\n"),
    )
    .unwrap();
    std::fs::write(dir.join("requirements.txt"), requirements).unwrap();
}

fn build_of(server: &common::Server, name: &str) -> serde_json::Value {
    let out = server.ok(&["pkg", "get", "--name", name, "-o", "json"]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_source_is_built_on_the_server_and_a_failed_build_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    // The registry the operator allows, and one it does not.
    index_with(&work.path().join("allowed"), "tiny", "from tiny");
    index_with(&work.path().join("other"), "other", "from elsewhere");
    let allowed = Index::serve(&work.path().join("allowed"));
    let other = Index::serve(&work.path().join("other"));
    let server =
        common::Server::start_with(&["--egress-allow-private", "--pip-index-url", &allowed.url()]);
    server.environment("python", "0");

    // A source whose requirement comes from the allowed index.
    let src = work.path().join("src");
    python_source(&src, "tiny", "tiny\n");
    let src_arg = src.to_str().unwrap();
    server.ok(&[
        "fn", "create", "--name", "built", "--env", "python", "--src", src_arg,
    ]);
    assert_eq!(server.get("/fn/built").text().unwrap(), "from tiny");
    let first = build_of(&server, "built-b1");
    assert_eq!(first["spec"]["status"]["state"], "succeeded", "{first}");
    assert_eq!(first["spec"]["status"]["version"], 1, "{first}");
    assert!(
        first["spec"]["status"].get("log").is_none(),
        "the record leaves the log to /log: {first}"
    );
    let log = server.ok(&["pkg", "logs", "--name", "built-b1"]);
    assert!(log.contains("Successfully installed tiny"), "{log}");

    // A source that asks for another index: the sandbox cannot reach it,
    // the build fails with pip's log, and the function still serves
    // version 1.
    python_source(
        &src,
        "other",
        &format!(
            "other @ http://127.0.0.1:{}/files/other-0.1-py3-none-any.whl\n",
            other.port
        ),
    );
    let refused = server.fails(&["fn", "update", "--name", "built", "--src", src_arg]);
    assert!(refused.contains("build built-b2 failed"), "{refused}");
    assert!(refused.contains("the function is unchanged"), "{refused}");
    assert!(
        refused.contains("403") || refused.contains("not allowed"),
        "the proxy's refusal shows in the log: {refused}"
    );
    assert_eq!(server.get("/fn/built").text().unwrap(), "from tiny");
    let second = build_of(&server, "built-b2");
    assert_eq!(second["spec"]["status"]["state"], "failed", "{second}");
    let versions = server.ok(&["fn", "versions", "--name", "built", "-o", "json"]);
    let versions: Vec<serde_json::Value> = serde_json::from_str(&versions).unwrap();
    assert_eq!(versions.len(), 1, "a failed build records no version");

    // A requirement the allowed index does not have fails the same way.
    python_source(&src, "missing", "missing-project\n");
    let missing = server.fails(&["fn", "update", "--name", "built", "--src", src_arg]);
    assert!(missing.contains("missing-project"), "{missing}");
    assert_eq!(server.get("/fn/built").text().unwrap(), "from tiny");

    // Fixed: the next build serves, as version 2.
    python_source(&src, "tiny", "tiny\n");
    std::fs::write(
        src.join("main.py"),
        "import tiny\n\n\ndef main(req):\n    return tiny.VALUE + ' again'\n",
    )
    .unwrap();
    server.ok(&["fn", "update", "--name", "built", "--src", src_arg]);
    assert_eq!(server.get("/fn/built").text().unwrap(), "from tiny again");
    assert_eq!(
        build_of(&server, "built-b4")["spec"]["status"]["version"],
        2
    );
    let listed = server.ok(&["pkg", "list"]);
    for (name, state) in [
        ("built-b1", "succeeded"),
        ("built-b2", "failed"),
        ("built-b3", "failed"),
        ("built-b4", "succeeded"),
    ] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(name) && l.contains(state)),
            "{name} {state}: {listed}"
        );
    }

    // Deleting the function deletes its builds.
    server.ok(&["fn", "delete", "--name", "built"]);
    let gone = server.fails(&["pkg", "get", "--name", "built-b1"]);
    assert!(gone.contains("not found"), "{gone}");
}

#[test]
fn a_node_source_is_built_and_bad_sources_are_refused_with_nothing_stored() {
    let server = common::Server::start();
    server.environment("node", "0");
    let work = tempfile::tempdir().unwrap();

    // A file: dependency: npm installs it without a registry.
    let src = work.path().join("js");
    std::fs::create_dir_all(src.join("vendor/tiny")).unwrap();
    std::fs::write(
        src.join("vendor/tiny/package.json"),
        r#"{"name": "tiny", "version": "1.0.0", "main": "index.js"}"#,
    )
    .unwrap();
    std::fs::write(
        src.join("vendor/tiny/index.js"),
        "module.exports = 'from tiny';\n",
    )
    .unwrap();
    // Its install script plants links: one to a file of the server's
    // (dangling in the sandbox, real on the host), one inside the source.
    std::fs::write(
        src.join("package.json"),
        r#"{"name": "jsbuilt", "version": "1.0.0", "main": "index.js",
            "dependencies": {"tiny": "file:./vendor/tiny"},
            "scripts": {"postinstall": "ln -s /etc/passwd leaked && ln -s vendor/tiny/index.js inside"}}"#,
    )
    .unwrap();
    std::fs::write(
        src.join("index.js"),
        "const fs = require('fs');\nconst tiny = require('tiny');\nmodule.exports = async () => ({ status: 200, body: `${tiny} leaked=${fs.existsSync(__dirname + '/leaked')} inside=${fs.existsSync(__dirname + '/inside')}` });\n",
    )
    .unwrap();
    let src_arg = src.to_str().unwrap();
    server.ok(&[
        "fn", "create", "--name", "jsbuilt", "--env", "node", "--src", src_arg,
    ]);
    assert_eq!(
        server.get("/fn/jsbuilt").text().unwrap(),
        "from tiny leaked=false inside=true",
        "the package holds what links inside the source point at, nothing of the host's"
    );
    let log = server.ok(&["pkg", "logs", "--name", "jsbuilt-b1"]);
    assert!(log.contains("npm install --omit=dev"), "{log}");

    // Bad input: clear errors, nothing stored.
    let no_env = server.fails(&["fn", "create", "--name", "noenv", "--src", src_arg]);
    assert!(no_env.contains("--env"), "{no_env}");
    let not_dir = server.fails(&[
        "fn",
        "create",
        "--name",
        "notdir",
        "--env",
        "node",
        "--src",
        src.join("index.js").to_str().unwrap(),
    ]);
    assert!(not_dir.contains("is not a directory"), "{not_dir}");
    let both = server.fails(&[
        "fn", "create", "--name", "both", "--env", "node", "--src", src_arg, "--code", src_arg,
    ]);
    assert!(both.contains("cannot be used with"), "{both}");
    let broken = work.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("package.json"), "{ not json").unwrap();
    let failed = server.fails(&[
        "fn",
        "create",
        "--name",
        "broken",
        "--env",
        "node",
        "--src",
        broken.to_str().unwrap(),
    ]);
    assert!(failed.contains("package.json is not JSON"), "{failed}");
    let functions = server.ok(&["fn", "list", "-o", "json"]);
    let functions: Vec<serde_json::Value> = serde_json::from_str(&functions).unwrap();
    let names: Vec<&str> = functions
        .iter()
        .map(|f| f["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jsbuilt"], "only the good source made a function");
}
