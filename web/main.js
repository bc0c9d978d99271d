// The page: load a diffusers UNet2DModel folder over HTTP, sample a grid with the wasm engine
// (web/pkg, built by web/build.sh) and draw it on the canvas.
//
// URL parameters (all optional): model=FOLDER (relative to the page; default the shipped
// default model, else a test fixture), sampler, steps, n, seed, guidance, class, perClass,
// scale (canvas pixels per image pixel), auto=0 (wait for the button).
//
// window.ddpm holds the page's state for the headless test (web/test.mjs): state is one of
// "loading", "sampling", "done", "error", "no-webgpu".
import init, { Engine, SampleParams } from "./pkg/ddpm_wgpu.js";

const MODELS = ["../assets/default-model/", "../tests/fixtures/unet_a_basic/"];
const url = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const ddpm = (window.ddpm = { state: "loading" });

function setStatus(state, text) {
  ddpm.state = state;
  $("status").textContent = text;
  $("status").className = state === "error" || state === "no-webgpu" ? "error" : "";
}

// What the browser says about WebGPU before the engine asks: navigator.gpu and the adapter
// requestAdapter() returns (null when there is none).
async function probeWebGpu() {
  const out = { navigatorGpu: typeof navigator.gpu, secureContext: isSecureContext };
  if (!navigator.gpu) return out;
  try {
    const a = await navigator.gpu.requestAdapter();
    out.adapter = a && {
      vendor: a.info?.vendor,
      architecture: a.info?.architecture,
      device: a.info?.device,
      description: a.info?.description,
      isFallbackAdapter: a.info?.isFallbackAdapter ?? a.isFallbackAdapter,
      features: [...a.features],
    };
  } catch (e) {
    out.error = String(e);
  }
  return out;
}

async function fetchOk(path, kind) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return kind === "bytes" ? new Uint8Array(await r.arrayBuffer()) : r.text();
}

async function fetchOptional(path) {
  const r = await fetch(path);
  return r.ok ? r.text() : undefined;
}

// The first folder of `candidates` whose config.json exists, with its files.
async function fetchModel(candidates) {
  for (const dir of candidates) {
    if (!(await fetch(dir + "config.json", { method: "HEAD" })).ok) continue;
    const [config, weights, scheduler, defaults] = await Promise.all([
      fetchOk(dir + "config.json"),
      fetchOk(dir + "diffusion_pytorch_model.safetensors", "bytes"),
      fetchOptional(dir + "scheduler_config.json"),
      fetchOptional(dir + "sample_defaults.json"),
    ]);
    return { dir, config, weights, scheduler, defaults: defaults ? JSON.parse(defaults) : {} };
  }
  throw new Error(`no model folder found (tried ${candidates.join(", ")})`);
}

// Images [n, C, H, W] in [-1, 1] as one RGBA grid of `cols` columns with a 2-pixel border, as
// the native engine's PNG grid (image::write_grid) lays them out.
function gridPixels(images, [n, c, h, w], cols) {
  const pad = 2;
  cols = Math.max(1, Math.min(cols, n));
  const rows = Math.ceil(n / cols);
  const gw = cols * (w + pad) + pad;
  const gh = rows * (h + pad) + pad;
  const px = new ImageData(gw, gh);
  px.data.fill(0);
  for (let i = 3; i < px.data.length; i += 4) px.data[i] = 255;
  const byte = (v) => Math.round((Math.min(1, Math.max(-1, v)) + 1) * 127.5);
  for (let i = 0; i < n; i++) {
    const x0 = (i % cols) * (w + pad) + pad;
    const y0 = Math.floor(i / cols) * (h + pad) + pad;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const at = (ch) => images[((i * c + ch) * h + y) * w + x];
        const rgb = c === 3 ? [at(0), at(1), at(2)] : [at(0), at(0), at(0)];
        const o = ((y0 + y) * gw + x0 + x) * 4;
        for (let k = 0; k < 3; k++) px.data[o + k] = byte(rgb[k]);
      }
    }
  }
  return px;
}

function draw(px, scale) {
  const canvas = $("grid");
  canvas.width = px.width * scale;
  canvas.height = px.height * scale;
  const small = new OffscreenCanvas(px.width, px.height);
  small.getContext("2d").putImageData(px, 0, 0);
  const g = canvas.getContext("2d");
  g.imageSmoothingEnabled = false;
  g.drawImage(small, 0, 0, canvas.width, canvas.height);
}

function numberParam(name, fallback) {
  const v = url.get(name);
  return v === null || v === "" ? fallback : Number(v);
}

async function sample(model) {
  const p = new SampleParams();
  p.sampler = $("sampler").value;
  p.steps = Number($("steps").value);
  p.n = Number($("n").value);
  p.seed = Number($("seed").value);
  p.guidance = Number($("guidance").value);
  if (url.has("class")) p.class = Number(url.get("class"));
  if (url.has("perClass")) p.perClass = Number(url.get("perClass"));
  else if (ddpm.defaults.per_class !== undefined) p.perClass = ddpm.defaults.per_class;
  ddpm.request = { sampler: p.sampler, steps: p.steps, n: p.n, seed: p.seed, guidance: p.guidance, class: p.class, perClass: p.perClass };
  setStatus("sampling", "sampling…");
  $("go").disabled = true;
  const started = performance.now();
  try {
    const out = await model.sample(p, (done, total) => {
      ddpm.step = [done, total];
      $("step").textContent = `${done}/${total}`;
    });
    ddpm.seconds = (performance.now() - started) / 1000;
    ddpm.shape = Array.from(out.shape);
    ddpm.cols = out.cols;
    ddpm.labels = out.labels && Array.from(out.labels);
    ddpm.images = out.images;
    draw(gridPixels(ddpm.images, ddpm.shape, ddpm.cols), numberParam("scale", 4));
    setStatus("done", `${ddpm.shape[0]} images in ${ddpm.seconds.toFixed(1)} s`);
  } catch (e) {
    ddpm.error = String(e);
    setStatus("error", String(e));
  } finally {
    $("go").disabled = false;
  }
}

async function main() {
  ddpm.webgpu = await probeWebGpu();
  if (!ddpm.webgpu.adapter) {
    const why = ddpm.webgpu.navigatorGpu === "undefined" ? "navigator.gpu is undefined" : "navigator.gpu.requestAdapter() returned null";
    setStatus("no-webgpu", `no WebGPU adapter: ${why}${ddpm.webgpu.error ? ` (${ddpm.webgpu.error})` : ""}`);
    return;
  }
  await init();
  const engine = await Engine.create();
  ddpm.adapter = engine.adapter;
  // wgpu names a browser adapter by its description, which software adapters leave empty.
  const a = ddpm.webgpu.adapter;
  const name = [a.vendor, a.architecture, a.description].filter(Boolean).join(" ");
  $("adapter").textContent = `Adapter: ${[name, engine.adapter.trim()].filter(Boolean).join(" ")}.`;
  const files = await fetchModel(url.has("model") ? [url.get("model").replace(/\/?$/, "/")] : MODELS);
  ddpm.model = files.dir;
  ddpm.defaults = files.defaults;
  $("model").textContent = files.dir;
  const model = engine.loadModel(files.config, files.weights, files.scheduler);
  const d = files.defaults;
  $("sampler").value = url.get("sampler") ?? d.sampler ?? "ddim";
  $("steps").value = numberParam("steps", d.steps ?? 20);
  $("n").value = numberParam("n", d.n ?? 16);
  $("seed").value = numberParam("seed", 0);
  $("guidance").value = numberParam("guidance", d.guidance ?? 1);
  $("controls").addEventListener("submit", (e) => {
    e.preventDefault();
    sample(model);
  });
  $("go").disabled = false;
  if (url.get("auto") !== "0") await sample(model);
  else setStatus("ready", "ready");
}

main().catch((e) => {
  ddpm.error = String(e);
  setStatus("error", String(e));
});
