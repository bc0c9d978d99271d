//! Every file in shaders/ parses and validates with naga (no GPU needed). A shader written with
//! the wide elements (`array<W4>`, `ld4`, `st4`) is validated with each prelude of
//! shaders/wide/ appended, as the engine compiles it.

use std::path::Path;

fn validate(what: &str, src: &str) {
    let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
    let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
    v.validate(&module)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
}

#[test]
fn every_shader_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let preludes: Vec<(String, String)> = ["vec4_f32.wgsl", "vec4_u64.wgsl"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read_to_string(dir.join("wide").join(f)).unwrap(),
            )
        })
        .collect();
    let (mut count, mut wide) = (0, 0);
    for entry in std::fs::read_dir(&dir).expect("shaders/ exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        if src.contains("array<W4>") {
            for (name, prelude) in &preludes {
                validate(
                    &format!("{} + wide/{name}", path.display()),
                    &format!("{src}\n{prelude}"),
                );
            }
            wide += 1;
        } else {
            validate(&path.display().to_string(), &src);
        }
        count += 1;
    }
    assert!(count >= 1, "no shaders found in {}", dir.display());
    assert!(wide >= 1, "no shader uses the wide elements of shaders/wide/");
}

/// The engine appends a prelude exactly to the shaders that use it: a shader with `array<W4>`
/// embedded without `wide` would not compile, one embedded with it but not using it is dead
/// weight. Checked against the `shader!` calls in src/.
#[test]
fn wide_shaders_are_embedded_as_wide() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut calls = String::new();
    let mut stack = vec![root.join("src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|e| e.to_str()) == Some("rs") {
                calls.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    for entry in std::fs::read_dir(root.join("shaders")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let uses = std::fs::read_to_string(&path).unwrap().contains("array<W4>");
        let plain = calls.contains(&format!("shader!(\"{stem}\")"));
        let wide = calls.contains(&format!("shader!(\"{stem}\", wide)"));
        assert!(plain || wide, "shaders/{stem}.wgsl is not embedded with shader!");
        assert_eq!(
            wide, uses,
            "shaders/{stem}.wgsl: uses W4 = {uses}, embedded as wide = {wide}"
        );
        assert!(!(plain && wide), "shaders/{stem}.wgsl embedded both ways");
    }
}
