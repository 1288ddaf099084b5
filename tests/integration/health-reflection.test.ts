import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProto } from 'grpc-health-check';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../services/runtime/logger.js';
import { ProcessTree } from '../../services/controller/launcher.js';
import { waitForNoProcesses } from '../helpers/processes.js';

const require = createRequire(import.meta.url);
const reflectionProto = join(dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto', 'grpc', 'reflection', 'v1', 'reflection.proto');

type Unary = (req: object, cb: (err: grpc.ServiceError | null, res: { status: string }) => void) => void;
interface HealthClient extends grpc.Client {
  Check: Unary;
}
interface ReflectionClient extends grpc.Client {
  ServerReflectionInfo(): grpc.ClientDuplexStream<object, { listServicesResponse?: { service: { name: string }[] } }>;
}

function load(path: string): grpc.GrpcObject {
  return grpc.loadPackageDefinition(protoLoader.loadSync(path, { keepCase: false, enums: String, defaults: true }));
}

/** Standard gRPC tooling talks to every role process, over Unix sockets and over TCP. */
for (const transport of ['unix', 'tcp'] as const) {
  describe(`health checking and reflection (${transport})`, () => {
    const marker = randomUUID();
    let dir: string;
    let tree: ProcessTree;

    beforeAll(async () => {
      process.env['VMMSIM_TEST_MARKER'] = marker;
      dir = mkdtempSync(join(tmpdir(), 'vmmsim-hr-'));
      tree = new ProcessTree({ socketDir: dir, transport, logLevel: 'warn', startTimeoutMs: 20_000, log: createLogger({ role: 'test' }, 'warn') });
      await tree.start([{ role: 'psmmu', index: 0 }, { role: 'vfio', index: 0 }]);
    });

    afterAll(async () => {
      await tree.stop();
      rmSync(dir, { recursive: true, force: true });
      expect(await waitForNoProcesses(marker, 5000)).toEqual([]);
      delete process.env['VMMSIM_TEST_MARKER'];
    });

    it(`listens on ${transport === 'unix' ? 'a socket in the private folder' : 'a loopback port'}`, () => {
      for (const p of tree.processes) {
        if (transport === 'unix') expect(p.address).toBe(`unix://${join(dir, `${p.name}.sock`)}`);
        else expect(p.address).toMatch(/^127\.0\.0\.1:\d+$/);
      }
    });

    it('answers grpc.health.v1.Health/Check with SERVING for the server as a whole', async () => {
      const Health = (load(healthProto)['grpc'] as grpc.GrpcObject)['health'] as grpc.GrpcObject;
      const Ctor = (Health['v1'] as grpc.GrpcObject)['Health'] as unknown as new (a: string, c: grpc.ChannelCredentials) => HealthClient;
      for (const p of tree.processes) {
        const client = new Ctor(p.address, grpc.credentials.createInsecure());
        const status = await new Promise<string>((resolve, reject) => client.Check({ service: '' }, (err, res) => (err ? reject(err) : resolve(res.status))));
        client.close();
        expect(status, p.name).toBe('SERVING');
      }
    });

    it('lists the vmmsim services through server reflection', async () => {
      const R = ((load(reflectionProto)['grpc'] as grpc.GrpcObject)['reflection'] as grpc.GrpcObject)['v1'] as grpc.GrpcObject;
      const Ctor = R['ServerReflection'] as unknown as new (a: string, c: grpc.ChannelCredentials) => ReflectionClient;
      const p = tree.processes[0];
      if (!p) throw new Error('no process');
      const client = new Ctor(p.address, grpc.credentials.createInsecure());
      const call = client.ServerReflectionInfo();
      const names = await new Promise<string[]>((resolve, reject) => {
        call.on('data', (res) => resolve((res.listServicesResponse?.service ?? []).map((s: { name: string }) => s.name)));
        call.on('error', reject);
        call.write({ listServices: '' });
      });
      call.end();
      client.close();
      expect(names).toEqual(expect.arrayContaining(['vmmsim.v1.Link', 'vmmsim.v1.Control']));
    });
  });
}
