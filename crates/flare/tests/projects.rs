//! From an empty directory to a function served: `flare new`, `flare
//! build`, `flare deploy`, and spec files applied, pruned and checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

fn generation(server: &common::Server, name: &str) -> u64 {
    let view: serde_json::Value =
        serde_json::from_str(&server.ok(&["fn", "get", "--name", name, "-o", "json"])).unwrap();
    view["metadata"]["generation"].as_u64().unwrap()
}

/// `flare new -l <language> hello && cd hello && flare deploy`, then the
/// function answers, on /fn/hello and on its route; a second deploy
/// changes nothing.
fn journey(language: &str) {
    let server = common::Server::start();
    if language != "rust" {
        server.environment(language, "0");
    }
    let work = tempfile::tempdir().unwrap();
    let created = server.ok_in(work.path(), &["new", "-l", language, "hello"]);
    assert!(created.contains("cd hello && flare deploy"), "{created}");
    let project = work.path().join("hello");
    for file in ["README.md", "flare.yaml", ".gitignore"] {
        assert!(project.join(file).is_file(), "{language}: {file}");
    }
    let deployed = server.ok_in(&project, &["deploy"]);
    assert!(
        deployed.contains("create function hello (code)"),
        "{deployed}"
    );
    assert!(deployed.contains("create http trigger hello"), "{deployed}");
    let answer = server.get("/fn/hello?name=ada");
    assert_eq!(answer.status(), 200, "{language}");
    assert_eq!(answer.text().unwrap(), "Hello, ada!\n", "{language}");
    assert_eq!(server.get("/hello").text().unwrap(), "Hello, world!\n");

    // The project's own test passes with the language's own tool.
    let (tool, args): (&str, &[&str]) = match language {
        "python" => ("python3", &["-m", "unittest"]),
        "node" => ("npm", &["test"]),
        "java" => (
            "java",
            &["-cp", "build/classes:build/flare-api", "test/MainTest.java"],
        ),
        _ => ("cargo", &["test", "--quiet"]),
    };
    let tested = std::process::Command::new(tool)
        .args(args)
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", project.join("target"))
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "{language}: {tool} {args:?}: {}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );

    // Built again from the same files: the same package, nothing to do.
    let again = server.ok_in(&project, &["deploy"]);
    assert!(again.contains("unchanged function hello"), "{again}");
    assert!(again.contains("0 changed, 2 unchanged"), "{again}");
    assert_eq!(generation(&server, "hello"), 1, "{language}");
}

#[test]
fn a_new_python_project_deploys_and_serves() {
    journey("python");
}

#[test]
fn a_new_node_project_deploys_and_serves() {
    journey("node");
}

#[test]
fn a_new_java_project_deploys_and_serves() {
    journey("java");
}

#[test]
fn a_new_rust_project_deploys_and_serves() {
    journey("rust");
}

#[test]
fn an_unknown_language_lists_the_known_ones_and_writes_nothing() {
    let server = common::Server::start();
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .args(["new", "-l", "cobol", "hello"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[possible values: rust, python, node, java]"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    // An existing directory is never overwritten.
    std::fs::create_dir(work.path().join("taken")).unwrap();
    std::fs::write(work.path().join("taken/keep"), "mine").unwrap();
    let err = server.fails(&[
        "new",
        "-l",
        "python",
        "taken",
        "--dir",
        work.path().join("taken").to_str().unwrap(),
    ]);
    assert!(err.contains("exists and is not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(work.path().join("taken/keep")).unwrap(),
        "mine"
    );
}

fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn function(name: &str, code: &str) -> String {
    format!(
        "---\napiVersion: flare.dev/v1\nkind: Function\nmetadata:\n  name: {name}\nspec:\n  environment: python\n  code: {code}\n"
    )
}

/// A pure-Python wheel of package `tiny` (`tiny.VALUE == "from tiny"`) at
/// `path`: a requirement pip installs without any index.
fn tiny_wheel(path: &Path) {
    use std::io::Write;
    let wheel = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(wheel);
    for (name, text) in [
        ("tiny/__init__.py", "VALUE = 'from tiny'\n"),
        (
            "tiny-0.1.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: tiny\nVersion: 0.1\n",
        ),
        (
            "tiny-0.1.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: flare-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (
            "tiny-0.1.dist-info/RECORD",
            "tiny/__init__.py,,\ntiny-0.1.dist-info/METADATA,,\ntiny-0.1.dist-info/WHEEL,,\ntiny-0.1.dist-info/RECORD,,\n",
        ),
    ] {
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

const PROJECT: &str = "apiVersion: flare.dev/v1\nkind: Project\nmetadata:\n  name: shop\n";

#[test]
fn a_spec_applies_once_prunes_only_its_own_and_reports_typos_by_line() {
    let server = common::Server::start();
    server.environment("python", "0");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let d = dir.to_str().unwrap();
    write(dir, "cart.py", "def main(req):\n    return 'cart'\n");
    write(dir, "list.py", "def main(req):\n    return 'list'\n");
    write(
        dir,
        "flare.yaml",
        &format!(
            "{PROJECT}{}{}",
            function("cart", "cart.py"),
            function("list", "list.py")
        ),
    );
    write(
        dir,
        "specs/route.yaml",
        "apiVersion: flare.dev/v1\nkind: HttpTrigger\nmetadata:\n  name: cart\nspec:\n  path: /cart\n  function: cart\n",
    );
    // Something the project does not own, with a name it does not use.
    server.create_python("other", "probe.py", &[]);

    // A dry run prints the plan and changes nothing.
    let plan = server.ok(&["spec", "apply", "--dir", d, "--dry-run"]);
    assert!(plan.contains("create function cart (code)"), "{plan}");
    assert!(plan.contains("(dry run: nothing changed)"), "{plan}");
    server.fails(&["fn", "get", "--name", "cart"]);

    let applied = server.ok(&["spec", "apply", "--dir", d]);
    assert!(applied.contains("3 changed, 0 unchanged"), "{applied}");
    assert_eq!(server.get("/cart").text().unwrap(), "cart");
    let again = server.ok(&["spec", "apply", "--dir", d]);
    assert!(again.contains("0 changed, 3 unchanged"), "{again}");
    assert_eq!(
        (generation(&server, "cart"), generation(&server, "list")),
        (1, 1)
    );

    // Changed code is uploaded and only that function updated.
    write(dir, "cart.py", "def main(req):\n    return 'cart v2'\n");
    let changed = server.ok(&["spec", "apply", "--dir", d]);
    assert!(changed.contains("update function cart (code)"), "{changed}");
    assert!(changed.contains("unchanged function list"), "{changed}");
    assert_eq!(server.get("/cart").text().unwrap(), "cart v2");

    // list leaves the directory: --prune deletes it and only it.
    write(
        dir,
        "flare.yaml",
        &format!("{PROJECT}{}", function("cart", "cart.py")),
    );
    let kept = server.ok(&["spec", "apply", "--dir", d]);
    assert!(!kept.contains("delete"), "{kept}");
    server.ok(&["fn", "get", "--name", "list"]);
    let pruned = server.ok(&["spec", "apply", "--dir", d, "--prune"]);
    assert!(pruned.contains("delete function list"), "{pruned}");
    server.fails(&["fn", "get", "--name", "list"]);
    server.ok(&["fn", "get", "--name", "other"]);
    server.ok(&["fn", "get", "--name", "cart"]);

    // A resource made outside the spec is not taken over.
    write(
        dir,
        "specs/other.yaml",
        function("other", "../cart.py").trim_start_matches(
            "---
",
        ),
    );
    let err = server.fails(&["spec", "apply", "--dir", d]);
    assert!(
        err.contains("function \"other\" exists and is not project shop's"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    std::fs::remove_file(dir.join("specs/other.yaml")).unwrap();

    // A typo'd field: its file and line, a non-zero exit, nothing changed.
    write(
        dir,
        "flare.yaml",
        &format!(
            "{PROJECT}{}  limits:\n    timout: 3s\n",
            function("cart", "cart.py")
        ),
    );
    let err = server.fails(&["spec", "validate", "--dir", d]);
    assert!(
        err.contains("flare.yaml:14: unknown field \"spec.limits.timout\""),
        "{err}"
    );
    let err = server.fails(&["spec", "apply", "--dir", d]);
    assert!(err.contains("1 problem in the spec"), "{err}");
    // A reference to nothing: named with its line too.
    write(
        dir,
        "flare.yaml",
        &format!(
            "{PROJECT}{}",
            function("cart", "cart.py").replace("python", "cobol")
        ),
    );
    let err = server.fails(&["spec", "validate", "--dir", d]);
    assert!(
        err.contains("flare.yaml:6: function \"cart\" refers to environment \"cobol\", which is neither declared here nor on the server"),
        "{err}"
    );
    // So is a secret that does not exist.
    write(
        dir,
        "flare.yaml",
        &format!(
            "{PROJECT}{}  secrets: [nope]\n",
            function("cart", "cart.py")
        ),
    );
    let err = server.fails(&["spec", "validate", "--dir", d]);
    assert!(
        err.contains("function \"cart\" refers to secret \"nope\", which is neither declared here nor on the server"),
        "{err}"
    );
    assert_eq!(generation(&server, "cart"), 2);

    // An alias to version 1, and the route serving it: version 1 answers
    // while the latest (version 2) is "cart v2".
    write(
        dir,
        "flare.yaml",
        &format!("{PROJECT}{}", function("cart", "cart.py")),
    );
    write(
        dir,
        "specs/route.yaml",
        "apiVersion: flare.dev/v1\nkind: Alias\nmetadata:\n  name: stable\nspec:\n  function: cart\n  version: 1\n---\napiVersion: flare.dev/v1\nkind: HttpTrigger\nmetadata:\n  name: cart\nspec:\n  path: /cart\n  function: cart\n  alias: stable\n",
    );
    let pinned = server.ok(&["spec", "apply", "--dir", d]);
    assert!(pinned.contains("create alias stable"), "{pinned}");
    assert!(pinned.contains("update http trigger cart"), "{pinned}");
    assert_eq!(server.get("/cart").text().unwrap(), "cart");
    assert_eq!(server.get("/fn/cart").text().unwrap(), "cart v2");
    let again = server.ok(&["spec", "apply", "--dir", d]);
    assert!(again.contains("0 changed, 3 unchanged"), "{again}");

    // destroy removes what the project owns, nothing else.
    let destroyed = server.ok(&["spec", "destroy", "--dir", d]);
    assert!(
        destroyed.contains("delete http trigger cart"),
        "{destroyed}"
    );
    server.fails(&["fn", "get", "--name", "cart"]);
    server.ok(&["fn", "get", "--name", "other"]);
}

#[test]
fn a_build_that_fails_shows_its_log_and_changes_nothing_live() {
    let server = common::Server::start();
    server.environment("java", "0");
    let work = tempfile::tempdir().unwrap();
    server.ok_in(work.path(), &["new", "-l", "java", "hello"]);
    let project = work.path().join("hello");
    server.ok_in(&project, &["deploy"]);
    assert_eq!(server.get("/fn/hello").text().unwrap(), "Hello, world!\n");
    let main = project.join("src/app/Main.java");
    let source = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, source.replace("return", "retrun")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .arg("deploy")
        .current_dir(&project)
        .env("FLARE_API", &server.api)
        .env("FLARE_TOKEN", &server.token)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("javac failed"), "{err}");
    assert!(err.contains("Main.java"), "{err}");
    assert_eq!(server.get("/fn/hello").text().unwrap(), "Hello, world!\n");
    assert_eq!(generation(&server, "hello"), 1);
}

#[test]
fn completion_scripts_cover_every_command_for_each_shell() {
    let script = |shell: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = script("bash");
    assert!(bash.contains("complete -F _flare"), "bash");
    for command in ["deploy", "rollback", "versions", "spec", "new"] {
        assert!(bash.contains(command), "bash: {command}");
    }
    assert!(script("zsh").starts_with("#compdef flare"));
    assert!(script("fish").contains("complete -c flare"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[possible values: bash, elvish, fish, powershell, zsh]"),
        "{err}"
    );
}

/// The documents of a YAML stream, as JSON.
fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap())
        .collect()
}

#[test]
fn the_api_publishes_a_json_schema_that_takes_every_template_and_refuses_typos() {
    let server = common::Server::start();
    // Open, like the OpenAPI document: an editor has no token.
    let schema: serde_json::Value = common::http()
        .get(format!("{}/v1/spec.schema.json", server.api))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let work = tempfile::tempdir().unwrap();
    for language in ["rust", "python", "node", "java"] {
        for trigger in ["http", "cron", "mq"] {
            let dir = work.path().join(format!("{language}-{trigger}"));
            server.ok(&[
                "new",
                "-l",
                language,
                "my-fn",
                "--trigger",
                trigger,
                "--dir",
                dir.to_str().unwrap(),
            ]);
            let text = std::fs::read_to_string(dir.join("flare.yaml")).unwrap();
            let docs = yaml_documents(&text);
            assert_eq!(docs.len(), 3, "{language} {trigger}");
            for doc in docs {
                let errors: Vec<String> =
                    validator.iter_errors(&doc).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{language} {trigger}: {doc}: {errors:?}");
            }
        }
    }
    let function = |spec: serde_json::Value| serde_json::json!({"apiVersion": "flare.dev/v1", "kind": "Function", "metadata": {"name": "f"}, "spec": spec});
    assert!(validator.is_valid(&function(serde_json::json!({"code": "f.wasm"}))));
    for bad in [
        function(serde_json::json!({"code": "f.wasm", "limits": {"timout": "3s"}})),
        function(serde_json::json!({"code": "f.wasm", "colour": "red"})),
        function(serde_json::json!({"runtime": "wasm"})),
        serde_json::json!({"apiVersion": "flare.dev/v1", "kind": "Gadget", "metadata": {"name": "g"}}),
        serde_json::json!({"apiVersion": "flare.dev/v2", "kind": "Project", "metadata": {"name": "p"}}),
    ] {
        assert!(!validator.is_valid(&bad), "{bad}");
    }
}

/// Kills the child when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn flare_dev_deploys_each_change_and_keeps_the_live_version_when_a_build_fails() {
    let server = common::Server::start();
    server.environment("node", "0");
    let work = tempfile::tempdir().unwrap();
    server.ok_in(work.path(), &["new", "-l", "node", "hello"]);
    let project = work.path().join("hello");
    let mut dev = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
            .args(["dev", "--interval", "200ms"])
            .current_dir(&project)
            .env("FLARE_API", &server.api)
            .env("FLARE_TOKEN", &server.token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // What it reports, line by line.
    let (lines, reported) = std::sync::mpsc::channel();
    let stderr = dev.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let answer = || {
        let response = server.get("/fn/hello?name=ada");
        (response.status() == 200).then(|| response.text().unwrap())
    };
    common::eventually(std::time::Duration::from_secs(60), || {
        answer().filter(|a| a == "Hello, ada!\n")
    });
    let index = project.join("index.js");
    let source = std::fs::read_to_string(&index).unwrap();
    std::fs::write(&index, source.replace("Hello, ", "Howdy, ")).unwrap();
    common::eventually(std::time::Duration::from_secs(60), || {
        answer().filter(|a| a == "Howdy, ada!\n")
    });
    // A package.json that is not JSON fails the build: the live version
    // stays, and the next good change is deployed.
    let manifest = project.join("package.json");
    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, "{ not json").unwrap();
    std::fs::write(&index, source.replace("Hello, ", "Hiya, ")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let line = reported
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("flare dev reports the failed build");
        if line.contains("the live version is unchanged") {
            break;
        }
    }
    assert_eq!(answer().as_deref(), Some("Howdy, ada!\n"));
    std::fs::write(&manifest, good).unwrap();
    common::eventually(std::time::Duration::from_secs(60), || {
        answer().filter(|a| a == "Hiya, ada!\n")
    });
}

#[test]
fn spec_init_names_a_project_once_and_checks_its_name() {
    let work = tempfile::tempdir().unwrap();
    let flare = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
            .args(args)
            .current_dir(work.path())
            .env("FLARE_API", "http://127.0.0.1:9")
            .output()
            .unwrap()
    };
    let dir = work.path().join("shop");
    let d = dir.to_str().unwrap();
    let out = flare(&["spec", "init", "--dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.join("flare.yaml")).unwrap();
    assert!(
        text.contains("kind: Project\nmetadata:\n  name: shop\n"),
        "{text}"
    );
    // It validates (no server to check references against: said so).
    let out = flare(&["spec", "validate", "--dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("project shop, 0 resources, no problems")
    );
    // A second init changes nothing.
    let out = flare(&["spec", "init", "--dir", d, "--name", "other"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));
    assert_eq!(
        std::fs::read_to_string(dir.join("flare.yaml")).unwrap(),
        text
    );
    // A name that is not a DNS label is refused, with what to do.
    let out = flare(&[
        "spec",
        "init",
        "--dir",
        work.path().join("Bad_Dir").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid project name") && err.contains("--name"),
        "{err}"
    );
    assert!(!work.path().join("Bad_Dir/flare.yaml").exists());
}

#[test]
fn python_and_node_dependencies_are_vendored_into_the_package() {
    let server = common::Server::start();
    server.environment("python", "0");
    server.environment("node", "0");
    let work = tempfile::tempdir().unwrap();

    // Python: a wheel on disk (no index is reached), in requirements.txt.
    server.ok_in(work.path(), &["new", "-l", "python", "pydep"]);
    let py = work.path().join("pydep");
    std::fs::create_dir(py.join("wheels")).unwrap();
    tiny_wheel(&py.join("wheels/tiny-0.1-py3-none-any.whl"));
    std::fs::write(
        py.join("requirements.txt"),
        "./wheels/tiny-0.1-py3-none-any.whl\n",
    )
    .unwrap();
    std::fs::write(
        py.join("main.py"),
        "import tiny\n\n\ndef main(req):\n    return tiny.VALUE\n",
    )
    .unwrap();
    server.ok_in(&py, &["deploy"]);
    assert_eq!(server.get("/fn/pydep").text().unwrap(), "from tiny");

    // Node: a file: dependency, installed with npm --omit=dev.
    server.ok_in(work.path(), &["new", "-l", "node", "jsdep"]);
    let js = work.path().join("jsdep");
    std::fs::create_dir_all(js.join("vendor/tiny")).unwrap();
    std::fs::write(
        js.join("vendor/tiny/package.json"),
        r#"{"name": "tiny", "version": "1.0.0", "main": "index.js"}"#,
    )
    .unwrap();
    std::fs::write(
        js.join("vendor/tiny/index.js"),
        "module.exports = 'from tiny';\n",
    )
    .unwrap();
    let manifest = std::fs::read_to_string(js.join("package.json")).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    manifest["dependencies"] = serde_json::json!({"tiny": "file:./vendor/tiny"});
    std::fs::write(js.join("package.json"), manifest.to_string()).unwrap();
    std::fs::write(
        js.join("index.js"),
        "const tiny = require('tiny');\nmodule.exports = async () => ({ status: 200, body: tiny });\n",
    )
    .unwrap();
    server.ok_in(&js, &["deploy"]);
    assert_eq!(server.get("/fn/jsdep").text().unwrap(), "from tiny");
}

#[test]
fn a_spec_holds_a_canary_and_replaces_it_when_it_changes() {
    let server = common::Server::start();
    server.environment("python", "0");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let d = dir.to_str().unwrap();
    write(dir, "hello.py", "def main(req):\n    return 'one'\n");
    write(
        dir,
        "flare.yaml",
        &format!("{PROJECT}{}", function("hello", "hello.py")),
    );
    server.ok(&["spec", "apply", "--dir", d]);

    // Version 2 and a canary from 1 to 2, in one apply: the function is
    // updated before the canary is made.
    write(dir, "hello.py", "def main(req):\n    return 'two'\n");
    let canary = |step: u32, extra: &str| {
        format!(
            "apiVersion: flare.dev/v1\nkind: Canary\nmetadata:\n  name: rollout\nspec:\n  function: hello\n  from: 1\n  to: 2\n  step: {step}\n  interval: 1h\n  failureThreshold: 10\n{extra}"
        )
    };
    write(dir, "specs/canary.yaml", &canary(20, ""));
    let applied = server.ok(&["spec", "apply", "--dir", d]);
    assert!(
        applied.contains("update function hello (code)"),
        "{applied}"
    );
    assert!(applied.contains("create canary rollout"), "{applied}");
    let status = |server: &common::Server| -> serde_json::Value {
        let out = server.ok(&["canary", "get", "--name", "rollout", "-o", "json"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["spec"]["status"].clone()
    };
    assert_eq!(status(&server)["state"], "running");
    assert_eq!(status(&server)["weight"], 20);

    // Its status is Flare's: applying again changes nothing.
    let again = server.ok(&["spec", "apply", "--dir", d]);
    assert!(again.contains("0 changed, 2 unchanged"), "{again}");

    // A changed canary cannot be updated in place: it is replaced, and
    // starts over at its new step.
    write(dir, "specs/canary.yaml", &canary(50, ""));
    let replaced = server.ok(&["spec", "apply", "--dir", d]);
    assert!(replaced.contains("replace canary rollout"), "{replaced}");
    assert!(replaced.contains("1 changed, 1 unchanged"), "{replaced}");
    assert_eq!(status(&server)["weight"], 50);

    // A status written in the file is refused with its line.
    write(
        dir,
        "specs/canary.yaml",
        &canary(50, "  status:\n    weight: 100\n"),
    );
    let refused = server.fails(&["spec", "validate", "--dir", d]);
    assert!(
        refused.contains("canary.yaml:12") && refused.contains("status is Flare's"),
        "{refused}"
    );

    // Dropped from the directory, --prune deletes it.
    std::fs::remove_file(dir.join("specs/canary.yaml")).unwrap();
    let pruned = server.ok(&["spec", "apply", "--dir", d, "--prune"]);
    assert!(pruned.contains("delete canary rollout"), "{pruned}");
    server.fails(&["canary", "get", "--name", "rollout"]);
}

#[test]
fn deploy_shows_progress_on_a_terminal_and_plain_lines_elsewhere() {
    let server = common::Server::start();
    server.environment("python", "0");
    let work = tempfile::tempdir().unwrap();
    server.ok_in(work.path(), &["new", "-l", "python", "bars"]);
    let dir = work.path().join("bars");
    std::fs::create_dir(dir.join("wheels")).unwrap();
    tiny_wheel(&dir.join("wheels/tiny-0.1-py3-none-any.whl"));
    std::fs::write(
        dir.join("requirements.txt"),
        "./wheels/tiny-0.1-py3-none-any.whl\n",
    )
    .unwrap();

    // On a terminal (script(1) gives the CLI a pseudo-terminal): a spinner
    // while pip runs, a bar over the apply's steps, a bar for the upload.
    let terminal = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} deploy", env!("CARGO_BIN_EXE_flare")),
            "/dev/null",
        ])
        .current_dir(&dir)
        .env("FLARE_API", &server.api)
        .env("FLARE_TOKEN", &server.token)
        .env("XDG_CONFIG_HOME", &server.config_home)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&terminal.stdout);
    assert!(terminal.status.success(), "{shown}");
    for drawn in [
        "pip install -r requirements.txt (",
        "0/2 create function bars",
        "uploading bars.zip",
        "/2 create http trigger bars",
    ] {
        assert!(shown.contains(drawn), "{drawn:?} not drawn: {shown:?}");
    }
    assert!(shown.contains("project bars: 2 changed"), "{shown}");

    // Elsewhere (a pipe): the plain lines only.
    std::fs::write(dir.join("main.py"), "def main(req):\n    return 'v2'\n").unwrap();
    let piped = server.cli_in(&dir, &["deploy"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&piped.stdout),
        String::from_utf8_lossy(&piped.stderr)
    );
    assert!(piped.status.success(), "{all}");
    assert!(all.contains("update function bars (code)"), "{all}");
    for drawn in ["uploading", "/2 ", "\u{1b}["] {
        assert!(!all.contains(drawn), "{drawn:?} drawn into a pipe: {all:?}");
    }
}
