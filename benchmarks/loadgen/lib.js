'use strict';
// The load generator's parts: SSE readers, the event payload, latency
// histograms, measurement phases, pacing, and CPU / RSS probes.

const fs = require('fs');
const http = require('http');
const http2 = require('http2');
const net = require('net');
const { performance } = require('perf_hooks');

const FRAME_BYTES = 200; // the size we aim at for one SSE frame on the wire

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (msg) => process.stderr.write(`loadgen: ${msg}\n`);

// ---------------------------------------------------------------- histogram

// Log buckets 1% wide from 1 us to 100 s: percentiles within about 1%.
const GROWTH = Math.log(1.01);
const BUCKETS = Math.ceil(Math.log(1e8) / GROWTH) + 1;

class Histogram {
  constructor() {
    this.counts = new Uint32Array(BUCKETS);
    this.n = 0;
    this.max = 0;
  }

  record(ms) {
    const us = Math.max(1, ms * 1000);
    this.counts[Math.min(BUCKETS - 1, Math.floor(Math.log(us) / GROWTH))]++;
    this.n++;
    if (ms > this.max) this.max = ms;
  }

  percentile(p) {
    if (this.n === 0) return null;
    const rank = Math.ceil((p / 100) * this.n);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.exp((i + 0.5) * GROWTH) / 1000; // bucket middle, in ms
    }
    return this.max;
  }
}

// ----------------------------------------------------------------- probes

// CPU seconds of another process, from /proc/PID/stat: [user, system].
function procCpuParts(pid, clkTck) {
  if (!pid) return [0, 0];
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return [Number(fields[11]) / clkTck, Number(fields[12]) / clkTck]; // utime, stime
}

// CPU seconds (user + system) of another process.
function procCpu(pid, clkTck) {
  const [user, system] = procCpuParts(pid, clkTck);
  return user + system;
}

// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
function machineBusy(clkTck) {
  const [user, nice, system, idle, iowait, irq, softirq, steal] = fs
    .readFileSync('/proc/stat', 'latin1')
    .split('\n')[0]
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  return (user + nice + system + irq + softirq + steal) / clkTck;
}

// CPU seconds of the generator's helper processes (env.helperPids), while they
// live: one that has exited counts what it had used when last read.
const helperCpuSeen = new Map();
function helpersCpu(env) {
  let total = 0;
  for (const pid of env.helperPids || []) {
    try {
      helperCpuSeen.set(pid, procCpu(pid, env.clkTck));
    } catch (err) {
      // gone: keep its last reading
    }
    total += helperCpuSeen.get(pid) || 0;
  }
  return total;
}

// Resident set size of a process in bytes, from /proc/PID/status VmRSS.
function procRss(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024;
}

// ----------------------------------------------------------------- phases

// One measured stretch: its events, the latency of every delivery, and the
// CPU the server, nats-server and this process spent meanwhile.
class Phase {
  constructor(name, env, extra = {}) {
    this.name = name;
    this.env = env;
    this.extra = extra;
    this.hist = new Histogram();
    this.events = 0;
    this.expected = 0; // deliveries: events x readers of their stream
    this.received = 0;
    this.firstPublish = null;
    this.lastReceive = null;
  }

  start() {
    this.t0 = performance.now();
    this.cpu0 = process.cpuUsage();
    this.server0 = procCpuParts(this.env.serverPid, this.env.clkTck);
    this.nats0 = procCpu(this.env.natsPid, this.env.clkTck);
    this.busy0 = machineBusy(this.env.clkTck);
    this.helpers0 = helpersCpu(this.env);
    return this;
  }

  onDelivery(latencyMs, now) {
    this.received++;
    this.lastReceive = now;
    this.hist.record(latencyMs);
  }

  // Wait until every expected delivery arrived, or until the deadline.
  async drain(timeoutMs) {
    const end = performance.now() + timeoutMs;
    while (this.received < this.expected && performance.now() < end) await sleep(2);
  }

  stop() {
    const wall = (performance.now() - this.t0) / 1000;
    const cpu = process.cpuUsage(this.cpu0);
    const [serverUser, serverSystem] = procCpuParts(this.env.serverPid, this.env.clkTck);
    const serverKernel = serverSystem - this.server0[1];
    const serverCpu = serverUser - this.server0[0] + serverKernel;
    const natsCpu = procCpu(this.env.natsPid, this.env.clkTck) - this.nats0;
    const helperCpu = (helpersCpu(this.env) - this.helpers0) / wall;
    // This process and its helpers (the soak's attacker) are the generator; they share its core.
    const loadgenCpu = (cpu.user + cpu.system) / 1e6 / wall + helperCpu;
    // Whatever else kept the machine's cores busy meanwhile, in cores.
    const otherCpu = (machineBusy(this.env.clkTck) - this.busy0 - serverCpu - natsCpu) / wall - loadgenCpu;
    const invalid = loadgenCpu > this.env.maxLoadgenCpu;
    const round = (x, digits = 3) => (x === null ? null : Number(x.toFixed(digits)));
    const deliverySpan = this.lastReceive === null ? null : (this.lastReceive - this.firstPublish) / 1000;
    return {
      name: this.name,
      ...this.extra,
      events: this.events,
      expected: this.expected,
      received: this.received,
      lost: this.expected - this.received,
      p50_ms: round(this.hist.percentile(50)),
      p99_ms: round(this.hist.percentile(99)),
      max_ms: round(this.hist.max),
      seconds: round(wall),
      deliveries_per_s: deliverySpan ? Math.round(this.received / deliverySpan) : null,
      server_cpu_s: round(serverCpu),
      cpu_us_per_delivery: this.received ? round((serverCpu * 1e6) / this.received) : null,
      // How much of it the kernel did (the sends, and on loopback the receiving TCP too).
      server_kernel_share: serverCpu ? round(serverKernel / serverCpu) : null,
      loadgen_cpu: round(loadgenCpu),
      ...(this.env.helperPids ? { helper_cpu: round(helperCpu) } : {}),
      nats_cpu: round(natsCpu / wall),
      other_cpu: round(Math.max(0, otherCpu)),
      noisy: otherCpu > this.env.maxOtherCpu,
      invalid,
      invalid_reason: invalid
        ? `load generator used ${(loadgenCpu * 100).toFixed(0)}% of its core (limit ${this.env.maxLoadgenCpu * 100}%)`
        : null,
    };
  }
}

// ------------------------------------------------------------- event payload

// One event: phase index, sequence number and scheduled send time (ms, from
// performance.now(): publisher and readers share this process's clock), padded
// so that the SSE frame is about FRAME_BYTES.
const PAD = 'x'.repeat(FRAME_BYTES);
function eventElement(phaseIndex, seq, sendMs) {
  const head = `{"p":${phaseIndex},"s":${seq},"t":${sendMs.toFixed(3)},"pad":"`;
  const room = FRAME_BYTES - 'id: 1234\ndata: \n\n'.length - head.length - 2;
  return `${head}${PAD.slice(0, Math.max(0, room))}"}`;
}

// The frame's event fields, read without JSON.parse (this is the hot path).
const FIELDS = /"p":(\d+),"s":(\d+),"t":([\d.]+)/y;

// ----------------------------------------------------------------- readers

// Splits a byte stream into SSE frames; calls onEvent(phase, seq, sentMs, now)
// for each data frame, and onGreeting() for the leading `retry:` frame.
class FrameParser {
  constructor(onEvent, onGreeting, onForeign = null) {
    this.buf = '';
    this.onEvent = onEvent;
    this.onGreeting = onGreeting;
    this.onForeign = onForeign; // data frames that are not ours (the soak counts them)
  }

  feed(chunk) {
    const now = performance.now();
    const text = this.buf + chunk.toString('latin1');
    let start = 0;
    let end;
    while ((end = text.indexOf('\n\n', start)) !== -1) {
      this.frame(text, start, end, now);
      start = end + 2;
    }
    this.buf = start === 0 ? text : text.slice(start);
  }

  frame(text, start, end, now) {
    if (text.charCodeAt(start) === 58 /* ':' keep-alive */) return;
    if (text.startsWith('retry:', start)) return this.onGreeting();
    const data = text.indexOf('data: {', start);
    if (data === -1 || data > end) return;
    let fields = data + 7;
    if (text.startsWith('"stream":', fields)) {
      // A many-job frame, {"stream":JOB,"data":EVENT}: the event is its data.
      const inner = text.indexOf('"data":{', fields);
      if (inner === -1 || inner > end) return;
      fields = inner + 8;
    }
    FIELDS.lastIndex = fields;
    const m = FIELDS.exec(text);
    if (m) this.onEvent(Number(m[1]), Number(m[2]), Number(m[3]), now);
    else if (this.onForeign) this.onForeign(text.slice(start, end));
  }
}

// HTTP/2 sessions to monit over TLS (env.http2), shared by readers: each
// carries up to H2_STREAMS streams (monit's limit per connection), as a
// browser's one connection to an origin would.
const H2_STREAMS = 100;
const h2Sessions = [];
function h2Session(env) {
  let session = h2Sessions.find((s) => s.streams < H2_STREAMS && !s.client.destroyed && !s.client.closed);
  if (!session) {
    const client = http2.connect(`https://${env.host}:${env.port}`, { rejectUnauthorized: false });
    client.on('error', () => {}); // each stream on it reports its own failure
    session = { client, streams: 0 };
    h2Sessions.push(session);
  }
  session.streams++;
  return session;
}

// Readers' source addresses, in turn: one pair of addresses has about 28,000
// ephemeral ports, so 100,000 connections to one server port need several
// (the whole of 127.0.0.0/8 is this host's).
const SOURCES = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7', '127.0.0.8', '127.0.0.9'];
let nextSource = 0;
const sourceAddress = () => SOURCES[nextSource++ % SOURCES.length];

// An SSE reader: monit over HTTP (GET /events; over HTTP/2 with env.http2), the
// reference over plain TCP (it sends the stream id as one line, the reference's
// stand-in for the URL). open() resolves once the server has sent the `retry:` greeting.
// A reader of monit may read several jobs on one response: `stream` is then a list.
class Reader {
  constructor(env, stream, onEvent, onForeign = null) {
    this.env = env;
    this.stream = stream;
    this.onEvent = onEvent;
    this.onForeign = onForeign;
    this.closer = null;
    this.closing = false;
    this.ended = false; // the server ended the stream (or the connection broke) while we read
  }

  open() {
    return new Promise((resolve, reject) => {
      let open = false;
      const timer = setTimeout(() => fail(new Error('no greeting within 30 s')), 30000);
      const done = () => {
        clearTimeout(timer);
        open = true;
        resolve(this);
      };
      const fail = (err) => {
        if (open && !this.closing) this.ended = true; // broken after the greeting
        clearTimeout(timer);
        this.close();
        reject(err);
      };
      const parser = new FrameParser(this.onEvent, done, this.onForeign);
      const ended = () => {
        if (!this.closing) this.ended = true;
      };
      if (this.env.target === 'monit' && this.env.http2) {
        const session = h2Session(this.env);
        const req = session.client.request({
          ':path': eventsPath(this.stream),
          'x-auth-token': this.env.token,
        });
        req.on('response', (headers) => {
          if (headers[':status'] !== 200) fail(new Error(`HTTP ${headers[':status']}`));
        });
        req.on('data', (chunk) => parser.feed(chunk));
        req.on('close', () => {
          session.streams--;
          ended();
        });
        req.on('error', fail);
        this.closer = () => req.close();
      } else if (this.env.target === 'monit') {
        const req = http.get({
          host: this.env.host,
          port: this.env.port,
          path: eventsPath(this.stream),
          headers: { 'X-Auth-Token': this.env.token },
          agent: false,
          localAddress: sourceAddress(),
        });
        req.on('response', (res) => {
          if (res.statusCode !== 200) return fail(new Error(`HTTP ${res.statusCode}`));
          res.on('data', (chunk) => parser.feed(chunk));
          res.on('close', ended);
        });
        req.on('error', fail);
        this.closer = () => req.destroy();
      } else {
        const where = { port: this.env.port, host: this.env.host, localAddress: sourceAddress() };
        const sock = net.connect(where, () => sock.write(`${this.stream}\n`));
        sock.on('data', (chunk) => parser.feed(chunk));
        sock.on('error', fail);
        sock.on('close', ended);
        this.closer = () => sock.destroy();
      }
    });
  }

  close() {
    this.closing = true;
    if (this.closer) this.closer();
  }
}

// monit's URL for one job's response, or (a list) for one response of several jobs.
function eventsPath(stream) {
  const jobs = Array.isArray(stream) ? stream : [stream];
  return `/events?${jobs.map((job) => `stream=${encodeURIComponent(job)}`).join('&')}`;
}

// Open count readers on the streams streamOf(i), a bounded number at a time
// (the server's listen backlog is small). If one fails, close the others.
async function openReaders(env, count, streamOf, onEvent, concurrency = 64, onForeign = null) {
  const readers = [];
  let next = 0;
  let failure = null;
  async function worker() {
    while (next < count && failure === null) {
      const i = next++;
      try {
        readers.push(await new Reader(env, streamOf(i), onEvent, onForeign).open());
      } catch (err) {
        failure = new Error(`reader ${i + 1} of ${count} failed: ${err.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  if (failure !== null) {
    closeReaders(readers);
    throw failure;
  }
  return readers;
}

function closeReaders(readers) {
  for (const reader of readers) reader.close();
}

// Call emit(i, scheduledMs) for i < count at `rate` per second; the schedule is
// fixed in advance, so latency counts from when an event was due, not sent.
async function paced(rate, count, emit) {
  const start = performance.now() + 5;
  const interval = 1000 / rate;
  let i = 0;
  while (i < count) {
    const now = performance.now();
    while (i < count && start + i * interval <= now) {
      emit(i, start + i * interval);
      i++;
    }
    if (i < count) await sleep(Math.min(5, Math.max(0, start + i * interval - performance.now())));
  }
}

// A small deterministic PRNG, so every run picks the same "random" streams.
function prng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

module.exports = {
  FrameParser,
  Histogram,
  Phase,
  Reader,
  eventElement,
  openReaders,
  prng,
  closeReaders,
  paced,
  procCpu,
  procRss,
  machineBusy,
  sleep,
  log,
};
