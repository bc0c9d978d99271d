// A minimal Chrome DevTools Protocol client: the browser is started with
// --remote-debugging-pipe and talks NUL-separated JSON over fd 3 (to the browser) and fd 4 (from
// it), so the test needs no npm package and no WebSocket.
import { spawn } from "node:child_process";

export class Browser {
  constructor(executable, args) {
    this.proc = spawn(executable, [...args, "--remote-debugging-pipe"], {
      stdio: ["ignore", "pipe", "pipe", "pipe", "pipe"],
    });
    this.log = "";
    const keep = (d) => (this.log = (this.log + d).slice(-20000));
    this.proc.stdout.on("data", keep);
    this.proc.stderr.on("data", keep);
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = [];
    this.exited = new Promise((resolve) =>
      this.proc.on("exit", (code, signal) => {
        for (const { reject } of this.pending.values()) reject(new Error(`browser exited (${code ?? signal})`));
        this.pending.clear();
        resolve({ code, signal });
      }),
    );
    this.proc.on("error", (e) => keep(`spawn ${executable}: ${e}\n`));
    let buf = "";
    this.proc.stdio[4].on("data", (chunk) => {
      buf += chunk.toString("utf8");
      for (let i; (i = buf.indexOf("\0")) >= 0; ) {
        const msg = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        const waiter = msg.id !== undefined && this.pending.get(msg.id);
        if (waiter) {
          this.pending.delete(msg.id);
          if (msg.error) waiter.reject(new Error(`${waiter.method}: ${JSON.stringify(msg.error)}`));
          else waiter.resolve(msg.result);
        } else {
          for (const l of this.listeners) l(msg);
        }
      }
    });
  }

  /** Call a protocol method (on a page when sessionId is given); resolves to its result. */
  send(method, params = {}, sessionId) {
    const id = this.nextId++;
    const msg = { id, method, params, ...(sessionId ? { sessionId } : {}) };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.proc.stdio[3].write(JSON.stringify(msg) + "\0");
    });
  }

  /** Open `url` in a new page; returns its session id. */
  async open(url) {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    await this.send("Runtime.enable", {}, sessionId);
    await this.send("Page.enable", {}, sessionId);
    await this.send("Page.navigate", { url }, sessionId);
    return sessionId;
  }

  /** Evaluate `expression` in the page (awaiting a promise) and return its value as JSON. */
  async evaluate(sessionId, expression) {
    const r = await this.send("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true }, sessionId);
    if (r.exceptionDetails) throw new Error(`${expression}: ${JSON.stringify(r.exceptionDetails)}`);
    return r.result.value;
  }

  close() {
    this.proc.kill();
    return this.exited;
  }
}
