/**
 * The instruments of the links a process opens (it is the client end): the one-way latency of each
 * crossing, per direction, and the requests waiting for their reply.
 *
 * A reply carries the request's hop (stamped sent here, received at the peer) first and its own
 * hop (sent at the peer, received here) last, so the client end knows both crossings of its link
 * once the reply is back; the hops in between belong to links further down, which the processes
 * there observe. Every crossing is observed once, by the process that opened its link.
 */
import { Gauge, type Metric } from 'prom-client';
import type { Hop__Output } from '../generated/vmmsim/v1/Hop.js';
import { perRegistry, type Registry } from '../metrics.js';

/**
 * Hop latency buckets in seconds: from a same-core crossing (a few microseconds) through the
 * usual 20-200 us, up to a process starved of CPU.
 */
export const HOP_BUCKETS_SECONDS = [5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1];

const HOP_METRIC = 'vmmsim_hop_latency_seconds';

/**
 * One direction of one link: bucket counts, sum and count in plain numbers. An observation is a
 * short bucket scan and three additions with no allocation; a prom-client histogram child costs
 * about 1 us an observation here (a label hash and objects per call), a few percent of a hop.
 */
export class HopSeries {
  /** Observations per bucket (not cumulative); the last slot is above the largest bound. */
  readonly counts = new Float64Array(HOP_BUCKETS_SECONDS.length + 1);
  sum = 0;
  count = 0;

  constructor(readonly labels: { readonly from: string; readonly to: string }) {}

  observe(seconds: number): void {
    const bounds = HOP_BUCKETS_SECONDS;
    let i = 0;
    while (i < bounds.length && seconds > (bounds[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += seconds;
    this.count += 1;
  }
}

/** A value of a metric as prom-client's registry renders it. */
interface RenderedValue {
  metricName: string;
  labels: Record<string, string | number>;
  value: number;
}

/**
 * The `vmmsim_hop_latency_seconds` family as a collector in a prom-client registry: it renders its
 * series as a Prometheus histogram (cumulative `_bucket` with `le`, `_sum`, `_count`) when
 * scraped. The registry asks a metric only for its name, help, type and get().
 */
class HopHistogram {
  readonly name = HOP_METRIC;
  readonly help = 'One-way latency of a link crossing, from its send stamp to its receive stamp on the host\'s monotonic clock; observed by the process that opened the link, when the reply is back.';
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series: HopSeries[] = [];

  child(from: string, to: string): HopSeries {
    const s = new HopSeries({ from, to });
    this.series.push(s);
    return s;
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: RenderedValue[] }> {
    const values: RenderedValue[] = [];
    // A series shows once it has an observation, as a prom-client histogram child does.
    for (const s of this.series) {
      if (s.count === 0) continue;
      let cumulative = 0;
      HOP_BUCKETS_SECONDS.forEach((le, i) => {
        cumulative += s.counts[i] as number;
        values.push({ metricName: `${HOP_METRIC}_bucket`, labels: { le, ...s.labels }, value: cumulative });
      });
      values.push({ metricName: `${HOP_METRIC}_bucket`, labels: { le: '+Inf', ...s.labels }, value: s.count });
      values.push({ metricName: `${HOP_METRIC}_sum`, labels: { ...s.labels }, value: s.sum });
      values.push({ metricName: `${HOP_METRIC}_count`, labels: { ...s.labels }, value: s.count });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    for (const s of this.series) {
      s.counts.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }
}

/** What the outstanding-requests gauge reads from a link at scrape time. */
export interface PendingRequests {
  readonly inFlight: number;
}

/**
 * One link's instruments: the series of its two directions, made once, and its entry in the
 * outstanding-requests gauge while it is open.
 */
export class LinkInstruments {
  constructor(
    private readonly request: HopSeries,
    private readonly reply: HopSeries,
    private readonly open: Map<PendingRequests, LinkInstruments>,
    readonly from: string,
    readonly to: string,
  ) {}

  /** A reply is back: observes the request's crossing (its first hop) and the reply's (its last). */
  replied(hops: readonly Hop__Output[]): void {
    const n = hops.length;
    if (n === 0) return;
    observe(this.request, hops[0] as Hop__Output);
    if (n > 1) observe(this.reply, hops[n - 1] as Hop__Output);
  }

  /** The link is open: its waiting requests count in the gauge. */
  attach(link: PendingRequests): void {
    this.open.set(link, this);
  }

  detach(link: PendingRequests): void {
    this.open.delete(link);
  }
}

/** A crossing's latency in seconds; a hop missing a stamp (a peer that never stamped) is skipped. */
function observe(series: HopSeries, hop: Hop__Output): void {
  const sent = hop.sentNs;
  const received = hop.receivedNs;
  if (sent > 0 && received >= sent) series.observe((received - sent) / 1e9);
}

class LinkMetrics {
  private readonly hop = new HopHistogram();
  private readonly made = new Map<string, LinkInstruments>();
  private readonly open = new Map<PendingRequests, LinkInstruments>();

  constructor(registry: Registry) {
    // A collector of its own shape (see HopHistogram): the registry's typing knows only its four classes.
    registry.registerMetric(this.hop as unknown as Metric);
    const open = this.open;
    new Gauge({
      name: 'vmmsim_link_outstanding_requests',
      help: 'Requests sent on a link and not answered yet, per open link of this process.',
      labelNames: ['from', 'to'],
      registers: [registry],
      collect(this: Gauge<'from' | 'to'>) {
        this.reset();
        for (const [link, m] of open) this.labels(m.from, m.to).inc(link.inFlight);
      },
    });
  }

  /** The instruments of the link from `self` to `peer`, made on the first link between them. */
  forLink(self: string, peer: string): LinkInstruments {
    const key = `${self}>${peer}`;
    let m = this.made.get(key);
    if (!m) {
      m = new LinkInstruments(this.hop.child(self, peer), this.hop.child(peer, self), this.open, self, peer);
      this.made.set(key, m);
    }
    return m;
  }
}

/** The link instruments of a registry (one set per process). */
export const linkMetrics = perRegistry((registry) => new LinkMetrics(registry));
export type { LinkMetrics };
