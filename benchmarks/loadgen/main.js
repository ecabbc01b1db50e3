'use strict';
// monit load generator: `node main.js CONFIG_JSON`.
//
// Runs one scenario against one target (monit over HTTP, or the reference
// over plain TCP), publishing with the official NATS client and reading SSE
// streams in this same process, so one clock times both ends. Progress goes to
// stderr; the result is one JSON line on stdout. A phase in which this process
// used more than maxLoadgenCpu of its core is marked invalid: the numbers would
// measure the generator, not the server.

const { performance } = require('perf_hooks');
const { connect } = require('nats');
const { Phase, eventElement, openReaders, closeReaders, paced, prng, procRss, sleep, log } = require('./lib');
const { soak } = require('./soak');

const encoder = new TextEncoder();

class Bench {
  constructor(env, nc) {
    this.env = env;
    this.nc = nc;
    this.phases = [];
    this.onEvent = (p, seq, sentMs, now) => this.phases[p].onDelivery(now - sentMs, now);
  }

  phase(name, extra) {
    const phase = new Phase(name, this.env, extra);
    phase.index = this.phases.length;
    this.phases.push(phase);
    return phase;
  }

  // One event for `stream`, which has `readers` readers; due at sendMs.
  publish(phase, stream, readers, sendMs = performance.now()) {
    if (phase.firstPublish === null) phase.firstPublish = sendMs;
    const element = eventElement(phase.index, phase.events++, sendMs);
    phase.expected += readers;
    this.nc.publish('monitor.user', encoder.encode(`{"id":"${stream}","messages":[${element}]}`));
  }

  readers(count, streamOf) {
    return openReaders(this.env, count, streamOf, this.onEvent);
  }

  // The server is up and subscribed: an event published now reaches a reader.
  async ready() {
    const [reader] = await this.readers(1, () => 'ready-probe');
    const probe = this.phase('ready-probe');
    const end = performance.now() + 20000;
    while (probe.received === 0) {
      if (performance.now() > end) throw new Error('no event reached a reader within 20 s');
      this.publish(probe, 'ready-probe', 1);
      await sleep(50);
    }
    reader.close();
  }
}

// ------------------------------------------------------------------ scenarios

// One stream, N readers: a burst of back-to-back events, then fixed rates up
// to the knee (the first rate whose p99 passes the limit or that loses events).
async function fanout(bench, p) {
  const phases = [];
  const summary = {};
  for (const n of p.readers) {
    const stream = `fan-${n}`;
    log(`fan-out: opening ${n} readers`);
    let readers;
    try {
      readers = await bench.readers(n, () => stream);
    } catch (err) {
      summary[`error@${n}`] = err.message; // e.g. a limit on connections: say why, go on
      log(`fan-out N=${n}: ${err.message}`);
      continue;
    }
    const warm = bench.phase(`warm N=${n}`);
    for (let i = 0; i < 3; i++) bench.publish(warm, stream, n);
    await warm.drain(10000);

    const events = Math.max(p.burst_min, Math.min(p.burst_max, Math.round(p.burst_deliveries / n)));
    const burst = bench.phase(`burst N=${n}`, { kind: 'burst', readers: n }).start();
    for (let i = 0; i < events; i++) bench.publish(burst, stream, n);
    await burst.drain(p.burst_timeout_s * 1000);
    const b = burst.stop();
    phases.push(b);
    summary[`burst_deliveries_per_s@${n}`] = b.invalid ? null : b.deliveries_per_s;
    summary[`burst_cpu_us_per_delivery@${n}`] = b.invalid ? null : b.cpu_us_per_delivery;
    // A saturated generator read no faster than this: the server managed at least as much.
    summary[`burst_deliveries_per_s_at_least@${n}`] = b.deliveries_per_s;
    log(`fan-out N=${n}: burst ${b.deliveries_per_s} deliveries/s, loadgen ${b.loadgen_cpu}`);

    let knee = null;
    for (const rate of p.rates) {
      const phase = bench.phase(`rate N=${n} ${rate}/s`, { kind: 'rate', readers: n, rate }).start();
      await paced(rate, Math.round(rate * p.rate_seconds), (i, due) => bench.publish(phase, stream, n, due));
      await phase.drain(p.drain_s * 1000);
      const r = phase.stop();
      phases.push(r);
      log(`fan-out N=${n} ${rate}/s: p50 ${r.p50_ms} p99 ${r.p99_ms} ms, lost ${r.lost}, loadgen ${r.loadgen_cpu}`);
      summary[`p50_ms@${n}@${rate}/s`] = r.invalid ? null : r.p50_ms;
      summary[`p99_ms@${n}@${rate}/s`] = r.invalid ? null : r.p99_ms;
      if (r.invalid) {
        knee = 'unknown (invalid phase)';
        break;
      }
      if (r.p99_ms > p.knee_p99_ms || r.lost > 0) {
        knee = rate;
        break;
      }
    }
    summary[`knee_rate@${n}`] = typeof knee === 'number' ? knee : null;
    summary[`knee_note@${n}`] = knee === null ? `none up to ${p.rates[p.rates.length - 1]}/s` : String(knee);
    closeReaders(readers);
    await sleep(300);
  }
  return { summary, phases };
}

// Many quiet streams with two readers each, and one hot stream with many:
// cold latency alone, then cold and hot together, reported apart.
async function manyStreams(bench, p) {
  const random = prng(42);
  const coldStream = (i) => `cold-${i % p.cold_streams}`;
  log(`many-streams: opening ${p.cold_streams} x ${p.cold_readers} cold readers, ${p.hot_readers} hot`);
  const cold = await bench.readers(p.cold_streams * p.cold_readers, coldStream);
  const hot = await bench.readers(p.hot_readers, () => 'hot');
  const coldEvents = Math.round(p.cold_rate * p.seconds);
  const publishCold = (phase) => (i, due) =>
    bench.publish(phase, coldStream(Math.floor(random() * p.cold_streams)), p.cold_readers, due);

  const alone = bench.phase('cold alone', { kind: 'cold', rate: p.cold_rate }).start();
  await paced(p.cold_rate, coldEvents, publishCold(alone));
  await alone.drain(p.drain_s * 1000);
  const a = alone.stop();

  const coldMixed = bench.phase('cold with hot', { kind: 'cold', rate: p.cold_rate }).start();
  const hotMixed = bench.phase('hot', { kind: 'hot', rate: p.hot_rate, readers: p.hot_readers }).start();
  await Promise.all([
    paced(p.cold_rate, coldEvents, publishCold(coldMixed)),
    paced(p.hot_rate, Math.round(p.hot_rate * p.seconds), (i, due) => bench.publish(hotMixed, 'hot', p.hot_readers, due)),
  ]);
  await Promise.all([coldMixed.drain(p.drain_s * 1000), hotMixed.drain(p.drain_s * 1000)]);
  const c = coldMixed.stop();
  const h = hotMixed.stop();
  // Both phases span the same window: the server's CPU is per delivery of both.
  const mixedCpu = (h.server_cpu_s * 1e6) / (h.received + c.received);
  c.cpu_us_per_delivery = h.cpu_us_per_delivery = Number(mixedCpu.toFixed(3));
  closeReaders(cold);
  closeReaders(hot);
  const ok = (phase, value) => (phase.invalid ? null : value);
  return {
    summary: {
      cold_alone_p50_ms: ok(a, a.p50_ms),
      cold_alone_p99_ms: ok(a, a.p99_ms),
      cold_p50_ms: ok(c, c.p50_ms),
      cold_p99_ms: ok(c, c.p99_ms),
      hot_p50_ms: ok(h, h.p50_ms),
      hot_p99_ms: ok(h, h.p99_ms),
      lost: a.lost + c.lost + h.lost,
      cpu_us_per_delivery: ok(h, c.cpu_us_per_delivery),
    },
    phases: [a, c, h],
  };
}

// RSS per open stream: (RSS with N streams - RSS with none) / N, each reader
// on a stream of its own, opened cumulatively.
async function idleMemory(bench, p) {
  const pid = bench.env.serverPid;
  const settledRss = async () => {
    await sleep(p.settle_ms);
    return procRss(pid);
  };
  const rss0 = await settledRss();
  const summary = { rss0_mb: Number((rss0 / 2 ** 20).toFixed(1)) };
  const levels = [];
  const readers = [];
  let previous = null;
  for (const n of p.streams) {
    log(`idle-memory: opening streams up to ${n}`);
    const more = await bench.readers(n - readers.length, (i) => `idle-${readers.length + i}`);
    readers.push(...more);
    const rss = await settledRss();
    const perStream = (rss - rss0) / n / 1024;
    levels.push({ streams: n, rss_mb: Number((rss / 2 ** 20).toFixed(1)), rss_per_stream_kb: Number(perStream.toFixed(2)) });
    summary[`rss_per_stream_kb@${n}`] = Number(perStream.toFixed(2));
    log(`idle-memory: ${n} streams, ${perStream.toFixed(2)} kB each`);
    summary[`rss_mb@${n}`] = Number((rss / 2 ** 20).toFixed(1));
    if (previous !== null) {
      // What each stream past the previous level cost: the figure without what the first streams bring once.
      const perMore = (rss - previous.rss) / (n - previous.streams) / 1024;
      summary[`rss_per_more_stream_kb@${previous.streams}-${n}`] = Number(perMore.toFixed(2));
    }
    previous = { streams: n, rss };
  }
  closeReaders(readers);
  return { summary, phases: [], levels };
}

// NATS traffic the server must sift: irrelevant subjects (nats-server filters
// them out), malformed payloads, and valid ones for a stream nobody reads;
// first mixed (the headline), then each kind alone. After each batch, a
// marker event to a watched stream tells when the server has caught up.
const INGEST_KINDS = {
  irrelevant: ['bench.noise', encoder.encode('{"id":"noise","messages":[{"n":0}]}')],
  malformed: ['monitor.user', encoder.encode('{"id":"bad","messages":[{"n":')],
  unread: ['monitor.user', encoder.encode('{"id":"noreaders","messages":[{"n":1,"body":"nobody reads this"}]}')],
};

async function ingestBatch(bench, p, name, kinds, messages) {
  const marker = bench.phase(`${name} marker`);
  const window = bench.phase(name, { kind: 'ingest', messages, rate: p.rate }).start();
  const first = performance.now();
  await paced(p.rate, messages, (i) => {
    const [subject, payload] = INGEST_KINDS[kinds[i % kinds.length]];
    bench.nc.publish(subject, payload);
  });
  const lastPublish = performance.now();
  bench.publish(marker, 'marker', 1, lastPublish);
  await marker.drain(p.timeout_s * 1000);
  const w = window.stop();
  const caughtUp = marker.received ? marker.lastReceive : null;
  Object.assign(w, {
    cpu_us_per_delivery: null,
    publish_rate: Math.round(messages / ((lastPublish - first) / 1000)),
    processed_per_s: caughtUp === null ? null : Math.round(messages / ((caughtUp - first) / 1000)),
    marker_delay_ms: caughtUp === null ? null : Number((caughtUp - lastPublish).toFixed(1)),
    kept_up: caughtUp !== null && caughtUp - lastPublish <= p.kept_up_ms,
    cpu_us_per_msg: Number(((w.server_cpu_s * 1e6) / messages).toFixed(3)),
  });
  log(`ingest ${name}: ${w.processed_per_s} msgs/s processed, ${w.cpu_us_per_msg} us/msg, kept up: ${w.kept_up}`);
  return w;
}

async function ingest(bench, p) {
  const [reader] = await bench.readers(1, () => 'marker');
  const mix = await ingestBatch(bench, p, 'mix', Object.keys(INGEST_KINDS), p.messages);
  const phases = [mix];
  for (const kind of Object.keys(INGEST_KINDS)) {
    phases.push(await ingestBatch(bench, p, kind, [kind], Math.round(p.messages / 3)));
  }
  reader.close();
  const ok = (phase, value) => (phase.invalid ? null : value);
  const summary = {
    processed_per_s: ok(mix, mix.processed_per_s),
    cpu_us_per_msg: ok(mix, mix.cpu_us_per_msg),
    marker_delay_ms: ok(mix, mix.marker_delay_ms),
    publish_rate: mix.publish_rate,
    kept_up: mix.kept_up,
  };
  for (const phase of phases.slice(1)) summary[`cpu_us_per_msg_${phase.name}`] = ok(phase, phase.cpu_us_per_msg);
  return { summary, phases };
}

// The ingest mix (INGEST_KINDS in turn) at up to `rate` messages/s until the
// returned stop() is called; stop() resolves to what was sent. At most
// FLOOD_BATCH messages per turn of the event loop, so that a publisher that
// falls behind does not starve the readers sharing this process.
const FLOOD_BATCH = 1000;
function flood(nc, rate) {
  const kinds = Object.values(INGEST_KINDS);
  const start = performance.now();
  let sent = 0;
  let running = true;
  const done = (async () => {
    while (running) {
      const due = Math.floor(((performance.now() - start) * rate) / 1000);
      for (const until = Math.min(due, sent + FLOOD_BATCH); sent < until; sent++) {
        const [subject, payload] = kinds[sent % kinds.length];
        nc.publish(subject, payload);
      }
      await (sent < due ? new Promise(setImmediate) : sleep(1));
    }
    const seconds = (performance.now() - start) / 1000;
    return { flood_messages: sent, flood_msgs_per_s: Math.round(sent / seconds) };
  })();
  return () => {
    running = false;
    return done;
  };
}

// One stream with N readers at a fixed rate: first alone, then while the
// ingest mix floods NATS as fast as this process can publish it.
async function floodFanout(bench, p) {
  const stream = 'flood-fan';
  const readers = await bench.readers(p.readers, () => stream);
  const warm = bench.phase('warm');
  for (let i = 0; i < 3; i++) bench.publish(warm, stream, p.readers);
  await warm.drain(10000);
  const fanAt = async (phase) => {
    await paced(p.rate, Math.round(p.rate * p.seconds), (i, due) => bench.publish(phase, stream, p.readers, due));
    await phase.drain(p.drain_s * 1000);
  };
  const extra = { kind: 'rate', readers: p.readers, rate: p.rate };

  const alone = bench.phase('alone', extra).start();
  await fanAt(alone);
  const a = alone.stop();

  const flooded = bench.phase('with flood', extra).start();
  const stopFlood = flood(bench.nc, p.flood_rate);
  await sleep(p.flood_lead_s * 1000); // the flood is at full speed before the first event
  await fanAt(flooded);
  const sent = await stopFlood();
  const f = Object.assign(flooded.stop(), sent);
  closeReaders(readers);
  for (const r of [a, f]) log(`flood-fanout ${r.name}: p50 ${r.p50_ms} p99 ${r.p99_ms} ms, lost ${r.lost}, loadgen ${r.loadgen_cpu}`);
  log(`flood-fanout: ${f.flood_msgs_per_s} flood msgs/s`);

  const ok = (phase, value) => (phase.invalid ? null : value);
  const ratio = a.invalid || f.invalid || !a.p99_ms ? null : Number((f.p99_ms / a.p99_ms).toFixed(3));
  return {
    summary: {
      p50_alone_ms: ok(a, a.p50_ms),
      p99_alone_ms: ok(a, a.p99_ms),
      p50_flood_ms: ok(f, f.p50_ms),
      p99_flood_ms: ok(f, f.p99_ms),
      p99_ratio_flood_vs_alone: ratio,
      within_2x: ratio === null ? null : ratio <= 2,
      flood_msgs_per_s: f.flood_msgs_per_s,
      lost: a.lost + f.lost,
    },
    phases: [a, f],
  };
}

// The steadiest figure on a noisy machine: server CPU-us per delivery.
async function cpuPerDelivery(bench, p) {
  const readers = await bench.readers(p.readers, () => 'cpu');
  const phase = bench.phase('cpu', { kind: 'rate', readers: p.readers, rate: p.rate }).start();
  await paced(p.rate, Math.round(p.rate * p.seconds), (i, due) => bench.publish(phase, 'cpu', p.readers, due));
  await phase.drain(p.drain_s * 1000);
  const r = phase.stop();
  closeReaders(readers);
  log(`cpu-per-delivery: ${r.cpu_us_per_delivery} us, p99 ${r.p99_ms} ms, loadgen ${r.loadgen_cpu}`);
  const ok = (value) => (r.invalid ? null : value);
  return {
    summary: {
      cpu_us_per_delivery: ok(r.cpu_us_per_delivery),
      server_cpu_share: ok(Number((r.server_cpu_s / r.seconds).toFixed(3))),
      p50_ms: ok(r.p50_ms),
      p99_ms: ok(r.p99_ms),
      lost: r.lost,
    },
    phases: [r],
  };
}

// A dashboard's cost: readers each on one response of several jobs, against
// the same number of readers each on one of those jobs, the jobs then
// publishing `jobs` times as fast, so that each reader gets as many events a
// second and the deliveries are the same. Server CPU-us per delivery of both,
// and their ratio.
async function manyJobs(bench, p) {
  const jobs = Array.from({ length: p.jobs }, (_, i) => `many-${i}`);
  const many = await bench.readers(p.readers, () => jobs);
  const m = await jobsPhase(bench, p, 'many-job readers', jobs, () => p.readers, p.rate);
  closeReaders(many);
  await sleep(300);
  const perJob = (job) => Math.floor(p.readers / p.jobs) + (jobs.indexOf(job) < p.readers % p.jobs ? 1 : 0);
  const one = await bench.readers(p.readers, (i) => jobs[i % p.jobs]);
  const o = await jobsPhase(bench, p, 'one-job readers', jobs, perJob, p.rate * p.jobs);
  closeReaders(one);
  const ok = (phase, value) => (phase.invalid ? null : value);
  const ratio = m.invalid || o.invalid || !o.cpu_us_per_delivery ? null : m.cpu_us_per_delivery / o.cpu_us_per_delivery;
  return {
    summary: {
      'cpu_us_per_delivery@many_jobs': ok(m, m.cpu_us_per_delivery),
      'cpu_us_per_delivery@one_job': ok(o, o.cpu_us_per_delivery),
      many_vs_one: ratio === null ? null : Number(ratio.toFixed(3)),
      'p99_ms@many_jobs': ok(m, m.p99_ms),
      'p99_ms@one_job': ok(o, o.p99_ms),
      lost: m.lost + o.lost,
    },
    phases: [m, o],
  };
}

// Events at `rate` a second, spread over `jobs` in turn, `readersOf(job)` reading each; after a warm-up.
async function jobsPhase(bench, p, name, jobs, readersOf, rate) {
  const warm = bench.phase(`warm ${name}`);
  for (const job of jobs) bench.publish(warm, job, readersOf(job));
  await warm.drain(10000);
  const phase = bench.phase(name, { kind: 'rate', readers: p.readers, jobs: p.jobs, rate }).start();
  await paced(rate, Math.round(rate * p.seconds), (i, due) => {
    const job = jobs[i % jobs.length];
    bench.publish(phase, job, readersOf(job), due);
  });
  await phase.drain(p.drain_s * 1000);
  const r = phase.stop();
  log(`many-jobs ${name}: ${r.cpu_us_per_delivery} us per delivery, p99 ${r.p99_ms} ms, lost ${r.lost}, loadgen ${r.loadgen_cpu}`);
  return r;
}

const SCENARIOS = {
  fanout,
  'many-streams': manyStreams,
  'idle-memory': idleMemory,
  ingest,
  'cpu-per-delivery': cpuPerDelivery,
  'flood-fanout': floodFanout,
  'many-jobs': manyJobs,
  soak, // benchmarks/soak.py; not in run.py's suite
};

async function main() {
  const env = JSON.parse(process.argv[2]);
  setTimeout(() => {
    log(`gave up after ${env.deadline_s} s`);
    process.exit(3);
  }, env.deadline_s * 1000).unref();
  const nc = await connect({ servers: env.nats, name: 'monit-loadgen' });
  const bench = new Bench(env, nc);
  await bench.ready();
  const result = await SCENARIOS[env.scenario](bench, env.params);
  await nc.close();
  const names = (flag) => result.phases.filter((phase) => phase[flag]).map((phase) => phase.name);
  const { scenario, target } = env;
  const line = { type: 'result', scenario, target, invalid: names('invalid'), noisy: names('noisy'), ...result };
  process.stdout.write(`${JSON.stringify(line)}\n`);
  process.exit(0); // do not wait for every reader's socket to finish closing
}

main().catch((err) => {
  log(`failed: ${err.stack || err}`);
  process.exit(1);
});
