import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { ProtoGrpcType as ControlProto } from './generated/control.js';
import type { ProtoGrpcType as LinkProto } from './generated/link.js';
import { packageRoot } from './paths.js';

/** Loader options; scripts/gen-proto-types.mjs generates the types with the same ones. */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

export const PROTO_FILES = ['vmmsim/v1/link.proto', 'vmmsim/v1/control.proto'];

/**
 * proto-loader, loaded on first use: it brings protobufjs's .proto parser and descriptor.proto's
 * reflection, which a role never needs (its Control service: control-service.ts; its links:
 * batch-codec.ts), until a tool asks it for server reflection.
 */
function loader(): typeof protoLoader {
  return createRequire(import.meta.url)('@grpc/proto-loader') as typeof protoLoader;
}

let loaded: { definition: protoLoader.PackageDefinition; link: LinkProto; control: ControlProto } | undefined;

export function protos(): { definition: protoLoader.PackageDefinition; link: LinkProto; control: ControlProto } {
  if (loaded) return loaded;
  const includeDirs = [join(packageRoot(), 'proto')];
  const definition = loader().loadSync(PROTO_FILES, { ...LOADER_OPTIONS, includeDirs });
  const pkg = grpc.loadPackageDefinition(definition);
  loaded = { definition, link: pkg as unknown as LinkProto, control: pkg as unknown as ControlProto };
  return loaded;
}

let control: ControlProto | undefined;

/**
 * The Control service alone (control.proto), for a role's server: a role needs no other proto at
 * start (its links use a codec of their own, batch-codec.ts; reflection loads protos() when a tool
 * first asks), and parsing link.proto too cost every process's start a few tens of ms.
 */
export function controlProto(): ControlProto {
  if (loaded) return loaded.control;
  if (control) return control;
  const includeDirs = [join(packageRoot(), 'proto')];
  control = grpc.loadPackageDefinition(loader().loadSync(['vmmsim/v1/control.proto'], { ...LOADER_OPTIONS, includeDirs })) as unknown as ControlProto;
  return control;
}
