import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import protobuf from 'protobufjs';
// Also teaches protobufjs' reflection objects to describe themselves (Root#toDescriptor).
import descriptor, { type IFileDescriptorSet } from 'protobufjs/ext/descriptor/index.js';
import { ROOT } from './cli.js';

/** The ext/descriptor extension's addition to Root, which its type declarations leave out. */
type DescribedRoot = protobuf.Root & { toDescriptor(edition: string): protobuf.Message<IFileDescriptorSet> };

/**
 * Writes the repository's proto files (paths under proto/) as a serialized
 * google.protobuf.FileDescriptorSet, which any protobuf runtime can load without protoc. Field
 * names stay as the .proto spells them (snake_case).
 */
export function writeDescriptorSet(protoFiles: readonly string[], out: string): void {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => join(ROOT, 'proto', target);
  root.loadSync([...protoFiles], { keepCase: true });
  root.resolveAll();
  const set = (root as DescribedRoot).toDescriptor('proto3');
  writeFileSync(out, descriptor.FileDescriptorSet.encode(set).finish());
}
