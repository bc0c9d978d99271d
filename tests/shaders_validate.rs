//! Every file in shaders/ parses and validates with naga (no GPU needed). A shader with buffers
//! of the wide elements (`array<W4>` / `array<W2>`) is validated with each prelude of
//! shaders/wide/ appended, and shaders/lib/philox.wgsl after it where it calls its functions, as the
//! engine compiles it (`gpu::pipeline::module_source`).

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
    let philox = std::fs::read_to_string(dir.join("lib").join("philox.wgsl")).unwrap();
    let (mut count, mut wide) = (0, 0);
    for entry in std::fs::read_dir(&dir).expect("shaders/ exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        if src.contains("array<W4>") || src.contains("array<W2>") {
            let lib = if ["philox(", "dropout_keep4(", "dropout_apply4(", "DropParams"]
                .iter()
                .any(|f| src.contains(f))
            {
                philox.as_str()
            } else {
                ""
            };
            for (name, prelude) in &preludes {
                validate(
                    &format!("{} + wide/{name}", path.display()),
                    &format!("{src}\n{prelude}\n{lib}"),
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
