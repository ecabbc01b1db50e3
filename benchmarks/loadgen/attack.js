'use strict';
// The soak test's attacker: a child process of the measuring generator
// (soak.js forks it), so that the measuring process stays light and its
// clock unaffected by the attack's bursts of work. It shares the generator's
// core (it inherits the affinity) and its CPU counts as the generator's.
//
// Runs, all at once, each at its own rate (the config's *_rate fields):
//   poison     hand-written NATS protocol on a raw TCP connection: a reply
//              subject that is not UTF-8, a header status that is no number,
//              payloads that are not UTF-8, not JSON, JSON with NaN, a
//              `messages` that is not a list, elements that are not objects
//   oversized  ~oversized_kb KB messages on monitor.user (official client)
//   flood      service.create for a fresh job id each time (official client)
//   slowloris  `slowloris` connections sending a request head one byte every
//              slowloris_interval_s, never finishing it; one the server closes
//              is opened again
//   churn      SSE readers with a valid token that connect and go again
//
// IPC: sends {type:'ready'} once everything runs, {type:'status'} every
// status_s, and on {cmd:'stop'} stops, sends {type:'stats'} and exits. It
// exits too when the parent goes.

const http = require('http');
const net = require('net');
const { performance } = require('perf_hooks');
const { connect } = require('nats');

const log = (msg) => process.stderr.write(`attack: ${msg}\n`);
const encoder = new TextEncoder();
const BATCH = 1000; // at most this many sends per turn of the event loop: timers stay on time

// Call emit(i) at `rate` per second until stop(); catches up after a late
// turn, BATCH at a time. Returns stop(), which returns how many were emitted.
function ticker(rate, emit, tickMs = 10) {
  const start = performance.now();
  let sent = 0;
  let running = rate > 0;
  const tick = () => {
    if (!running) return;
    const due = Math.floor(((performance.now() - start) * rate) / 1000);
    for (const until = Math.min(due, sent + BATCH); sent < until; sent++) emit(sent);
    if (sent < due) setImmediate(tick);
    else setTimeout(tick, tickMs);
  };
  tick();
  return () => {
    running = false;
    return sent;
  };
}

// ------------------------------------------------------------------ poison

function pub(subject, payload) {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  return Buffer.concat([Buffer.from(`PUB ${subject} ${body.length}\r\n`), body, Buffer.from('\r\n')]);
}

// What a buggy or hostile publisher sends. nats-server relays all of these to
// monit (it checks little more than the framing); the JSON ones name the
// control job, so that anything monit lets through shows on the control stream.
function poisonKinds(job) {
  return {
    bad_reply: Buffer.from('PUB monitor.user \xff\xfe.reply 2\r\n{}\r\n', 'latin1'),
    bad_header: Buffer.from('HPUB monitor.user 16 18\r\nNATS/1.0 abc\r\n\r\n{}\r\n'),
    not_utf8: pub('monitor.user', Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])),
    not_json: pub('monitor.user', 'this is not JSON {'),
    nan: pub('monitor.user', `{"id":"${job}","messages":[{"poison":NaN}]}`),
    not_a_list: pub('monitor.user', `{"id":"${job}","messages":{"poison":1}}`),
    bad_elements: pub('monitor.user', `{"id":"${job}","messages":[1,"two",null,[]]}`),
  };
}

// A NATS client written by hand: CONNECT with headers on, PONG to PINGs,
// -ERR counted, reconnected if the server closes it.
class RawNats {
  constructor(url) {
    const { hostname, port } = new URL(url);
    this.host = hostname;
    this.port = Number(port);
    this.errors = 0;
    this.reconnects = 0;
    this.running = true;
    this.sock = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      const sock = net.connect(this.port, this.host);
      let buf = '';
      let greeted = false;
      sock.on('data', (chunk) => {
        buf += chunk.toString('latin1');
        let end;
        while ((end = buf.indexOf('\r\n')) !== -1) {
          const line = buf.slice(0, end);
          buf = buf.slice(end + 2);
          if (line.startsWith('INFO') && !greeted) {
            greeted = true;
            sock.write('CONNECT {"verbose":false,"pedantic":false,"headers":true,"name":"soak-poison"}\r\n');
            this.sock = sock;
            resolve();
          } else if (line === 'PING') sock.write('PONG\r\n');
          else if (line.startsWith('-ERR')) this.errors++;
        }
      });
      sock.on('error', (err) => (greeted ? null : reject(err)));
      sock.on('close', () => {
        if (this.sock === sock) this.sock = null;
        if (greeted && this.running) {
          this.reconnects++;
          setTimeout(() => this.running && this.open().catch(() => null), 200);
        }
      });
    });
  }

  send(bytes) {
    if (this.sock) this.sock.write(bytes);
  }

  close() {
    this.running = false;
    if (this.sock) this.sock.destroy();
  }
}

// -------------------------------------------------------------- slowloris

// An endless request head: a request line, then header lines, never the
// blank line that would end it.
function* slowHead(i) {
  yield* `GET /events?stream=slow-${i} HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
  for (let n = 0; ; n++) yield* `X-Slow-${n}: ${'z'.repeat(8)}\r\n`;
}

class Slowloris {
  constructor(cfg) {
    this.cfg = cfg;
    this.conns = new Set();
    this.running = true;
    this.stats = { opened: 0, closed_by_server: 0, answered: 0, statuses: {}, failed_connects: 0, max_open: 0 };
  }

  async start() {
    const { slowloris: count } = this.cfg;
    for (let i = 0; i < count; i += 50) {
      // A bounded number at a time: the server's listen backlog is small.
      await Promise.all(Array.from({ length: Math.min(50, count - i) }, (_, k) => this.open(i + k)));
    }
    this.timer = setInterval(() => this.trickle(), 50);
  }

  open(i) {
    return new Promise((resolve) => {
      const sock = net.connect(this.cfg.port, this.cfg.host);
      const conn = { sock, head: slowHead(i), next: 0, i };
      sock.setNoDelay(true);
      sock.on('connect', () => {
        this.stats.opened++;
        // Spread the connections' bytes over the interval, not all in one tick.
        conn.next = performance.now() + Math.random() * this.cfg.slowloris_interval_s * 1000;
        this.conns.add(conn);
        this.stats.max_open = Math.max(this.stats.max_open, this.conns.size);
        resolve();
      });
      sock.on('data', (chunk) => this.answered(conn, chunk));
      sock.on('error', () => null);
      sock.on('close', () => {
        const was = this.conns.delete(conn);
        if (!was) {
          this.stats.failed_connects++;
          resolve();
        } else if (this.running) this.stats.closed_by_server++;
        if (this.running) setTimeout(() => this.running && this.open(i), 1000); // keep the count up
      });
    });
  }

  answered(conn, chunk) {
    if (conn.answered) return;
    conn.answered = true;
    this.stats.answered++;
    const status = /^HTTP\/1\.\d (\d+)/.exec(chunk.toString('latin1'));
    const key = status ? status[1] : 'other';
    this.stats.statuses[key] = (this.stats.statuses[key] || 0) + 1;
  }

  trickle() {
    const now = performance.now();
    const interval = this.cfg.slowloris_interval_s * 1000;
    for (const conn of this.conns) {
      if (conn.next > now) continue;
      conn.next = now + interval;
      conn.sock.write(conn.head.next().value);
    }
  }

  stop() {
    this.running = false;
    clearInterval(this.timer);
    for (const conn of this.conns) conn.sock.destroy();
    return { ...this.stats, open_at_end: this.conns.size };
  }
}

// ------------------------------------------------------------------ churn

// Readers that come and go: connect, take the greeting (or the refusal),
// stay a while, leave. Half of them (churn_fresh) ask for a fresh job id.
class Churn {
  constructor(cfg) {
    this.cfg = cfg;
    this.inflight = new Set();
    this.stats = { started: 0, ok: 0, statuses: {}, errors: 0, timeouts: 0, skipped: 0 };
  }

  start() {
    const cap = Math.max(10, this.cfg.churn_rate * 10); // a stalled server must not grow us without end
    this.stopTicker = ticker(this.cfg.churn_rate, (i) => {
      if (this.inflight.size >= cap) this.stats.skipped++;
      else this.one(i);
    });
  }

  stream(i) {
    const { churn_fresh: fresh, jobs, tag } = this.cfg;
    return Math.random() < fresh ? `churn-${tag}-${i}` : jobs[i % jobs.length];
  }

  one(i) {
    this.stats.started++;
    const req = http.get({
      host: this.cfg.host,
      port: this.cfg.port,
      path: `/events?stream=${encodeURIComponent(this.stream(i))}`,
      headers: { 'X-Auth-Token': this.cfg.token },
      agent: false,
    });
    this.inflight.add(req);
    let leaving = false; // we end it: what follows is no error
    const leave = () => {
      leaving = true;
      req.destroy();
    };
    const timer = setTimeout(() => {
      this.stats.timeouts++;
      leave();
    }, 10000);
    req.on('response', (res) => {
      clearTimeout(timer);
      const key = String(res.statusCode);
      this.stats.statuses[key] = (this.stats.statuses[key] || 0) + 1;
      if (res.statusCode === 200) this.stats.ok++;
      res.resume();
      const hold = res.statusCode === 200 ? Math.random() * 2 * this.cfg.churn_hold_ms : 0;
      setTimeout(leave, hold);
    });
    req.on('error', () => {
      if (!leaving) this.stats.errors++;
    });
    req.on('close', () => {
      clearTimeout(timer);
      this.inflight.delete(req);
    });
  }

  stop() {
    this.stopTicker();
    for (const req of this.inflight) {
      req.removeAllListeners('error');
      req.on('error', () => null);
      req.destroy();
    }
    return { ...this.stats, inflight_at_end: this.inflight.size };
  }
}

// ------------------------------------------------------------------- main

async function main() {
  const cfg = JSON.parse(process.argv[2]);
  process.on('disconnect', () => process.exit(0)); // the parent went: so do we
  const started = performance.now();
  const nc = await connect({ servers: cfg.nats, name: 'soak-attack' });
  const raw = new RawNats(cfg.nats);
  await raw.open();
  const slowloris = new Slowloris(cfg);
  await slowloris.start();
  const churn = new Churn(cfg);
  churn.start();

  const kinds = Object.entries(poisonKinds(cfg.control_job));
  const stopPoison = kinds.map(([, bytes]) => ticker(cfg.poison_rate, () => raw.send(bytes), 50));
  const big = encoder.encode(
    `{"id":"${cfg.control_job}","messages":[{"pad":"${'o'.repeat(cfg.oversized_kb * 1024)}"}]}`,
  );
  const stopOversized = ticker(cfg.oversized_rate, () => nc.publish('monitor.user', big), 50);
  const stopFlood = ticker(cfg.flood_rate, (i) =>
    nc.publish('service.create', encoder.encode(`{"id":"flood-${cfg.tag}-${i}","name":"flood"}`)),
  );
  const status = setInterval(() => {
    process.send({ type: 'status', slowloris_open: slowloris.conns.size, churn_inflight: churn.inflight.size });
  }, cfg.status_s * 1000);
  process.send({ type: 'ready', ramp_s: Number(((performance.now() - started) / 1000).toFixed(2)) });
  log(`running: ${slowloris.conns.size} slowloris, churn ${cfg.churn_rate}/s, flood ${cfg.flood_rate}/s`);

  process.on('message', async (msg) => {
    if (msg.cmd !== 'stop') return;
    clearInterval(status);
    const seconds = (performance.now() - started) / 1000;
    const poison = {};
    kinds.forEach(([name], i) => (poison[name] = stopPoison[i]()));
    const stats = {
      seconds: Number(seconds.toFixed(1)),
      poison,
      poison_nats_errors: raw.errors,
      poison_reconnects: raw.reconnects,
      oversized: stopOversized(),
      oversized_bytes: big.length,
      flood: stopFlood(),
      slowloris: slowloris.stop(),
      churn: churn.stop(),
    };
    stats.flood_per_s = Math.round(stats.flood / seconds);
    raw.close();
    await nc.flush().catch(() => null);
    await nc.close().catch(() => null);
    process.send({ type: 'stats', stats }, () => process.exit(0));
  });
}

main().catch((err) => {
  log(`failed: ${err.stack || err}`);
  process.exit(1);
});
