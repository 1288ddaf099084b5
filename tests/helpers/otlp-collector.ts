import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import { ROOT } from './cli.js';

/** A span as the collector received it. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  name: string;
  startNs: bigint;
  endNs: bigint;
  attributes: Record<string, string | number | boolean>;
  /** The exporting process's resource attributes (service.instance.id...). */
  resource: Record<string, string | number | boolean>;
}

export interface Collector {
  /** http://127.0.0.1:PORT, as --otlp-endpoint takes it. */
  url: string;
  spans: ReceivedSpan[];
  /** Export calls received. */
  exports: number;
  close(): Promise<void>;
}

interface AnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string;
  doubleValue?: number;
  value?: string;
}
interface KeyValue {
  key: string;
  value?: AnyValue;
}
interface WireSpan {
  traceId: Buffer;
  spanId: Buffer;
  parentSpanId: Buffer;
  name: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: KeyValue[];
}
interface ExportRequest {
  resourceSpans: { resource?: { attributes: KeyValue[] }; scopeSpans: { spans: WireSpan[] }[] }[];
}

function attrs(kvs: readonly KeyValue[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const kv of kvs ?? []) {
    const v = kv.value;
    if (!v) continue;
    if (v.value === 'stringValue' && v.stringValue !== undefined) out[kv.key] = v.stringValue;
    else if (v.value === 'boolValue' && v.boolValue !== undefined) out[kv.key] = v.boolValue;
    else if (v.value === 'intValue' && v.intValue !== undefined) out[kv.key] = Number(v.intValue);
    else if (v.value === 'doubleValue' && v.doubleValue !== undefined) out[kv.key] = v.doubleValue;
  }
  return out;
}

/**
 * An OTLP/gRPC trace collector inside the test: a grpc-js server implementing
 * opentelemetry.proto.collector.trace.v1.TraceService/Export from the minimal proto under
 * tests/fixtures/otlp, keeping every span it receives.
 */
export async function startCollector(): Promise<Collector> {
  const def = protoLoader.loadSync(join(ROOT, 'tests', 'fixtures', 'otlp', 'trace_service.proto'), { longs: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    opentelemetry: { proto: { collector: { trace: { v1: { TraceService: { service: grpc.ServiceDefinition } } } } } };
  };
  const collector: Collector = { url: '', spans: [], exports: 0, close: () => Promise.resolve() };
  const server = new grpc.Server();
  server.addService(pkg.opentelemetry.proto.collector.trace.v1.TraceService.service, {
    Export: (call: grpc.ServerUnaryCall<ExportRequest, object>, cb: grpc.sendUnaryData<object>) => {
      collector.exports += 1;
      for (const rs of call.request.resourceSpans) {
        const resource = attrs(rs.resource?.attributes);
        for (const ss of rs.scopeSpans) {
          for (const s of ss.spans) {
            collector.spans.push({
              traceId: s.traceId.toString('hex'),
              spanId: s.spanId.toString('hex'),
              parentSpanId: s.parentSpanId.toString('hex'),
              name: s.name,
              startNs: BigInt(s.startTimeUnixNano),
              endNs: BigInt(s.endTimeUnixNano),
              attributes: attrs(s.attributes),
              resource,
            });
          }
        }
      }
      cb(null, {});
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  collector.url = `http://127.0.0.1:${port}`;
  collector.close = () => new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  return collector;
}
