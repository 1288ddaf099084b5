// Generates TypeScript types for every proto file with proto-loader-gen-types, using the same
// options services/runtime/proto.ts passes to proto-loader at run time.
import { spawnSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const protoDir = join(root, 'proto');
const outDir = join(root, 'services', 'runtime', 'generated');
const require = createRequire(import.meta.url);
const generator = join(dirname(require.resolve('@grpc/proto-loader/package.json')), 'build', 'bin', 'proto-loader-gen-types.js');

const files = readdirSync(join(protoDir, 'vmmsim', 'v1'))
  .filter((f) => f.endsWith('.proto'))
  .map((f) => join('vmmsim', 'v1', f));
rmSync(outDir, { recursive: true, force: true });
const result = spawnSync(process.execPath, [
  generator, '--grpcLib=@grpc/grpc-js', '--longs=Number', '--enums=String', '--defaults', '--oneofs',
  '--importFileExtension=.js', `--includeDirs=${protoDir}`, `--outDir=${outDir}`, ...files,
], { stdio: 'inherit' });
process.exit(result.status ?? 1);
