import type * as grpc from '@grpc/grpc-js';
import { createRequire } from 'node:module';
import type { IConversionOptions, Root, Type } from 'protobufjs';
import { CONTROL_DESCRIPTOR } from './generated/control-descriptor.js';

/** What proto-loader hands toObject with proto.ts's LOADER_OPTIONS (longs Number, enums String, defaults, oneofs). */
const TO_OBJECT: IConversionOptions = { longs: Number, enums: String, defaults: true, oneofs: true };

/** proto-loader's serializer (createSerializer): fromObject, then encode. */
function serializer(type: Type): (value: object) => Buffer {
  return (value) => {
    if (Array.isArray(value)) throw new Error(`Failed to serialize message: expected object with ${type.name} structure, got array instead`);
    return type.encode(type.fromObject(value as Record<string, unknown>)).finish() as Buffer;
  };
}

/** proto-loader's deserializer (createDeserializer): decode, then toObject with the loader's options. */
function deserializer(type: Type): (buf: Buffer) => object {
  return (buf) => type.toObject(type.decode(buf), TO_OBJECT);
}

let definition: grpc.ServiceDefinition | undefined;

/**
 * The Control service (control.proto) as a role serves it, with the same paths and the same
 * (de)serialization as proto-loader gives it (proto.ts controlProto), built with protobufjs/light
 * from the reflection scripts/gen-proto-types.mjs wrote at build time. A role so loads neither
 * proto-loader nor protobufjs's .proto parser, nor the descriptor.proto reflection proto-loader
 * builds at load: about 3 MB less heap in every role process (`npm run bench -- scale`).
 * tests/unit/control-service.test.ts holds it to proto-loader's definition, method by method.
 */
export function controlServiceDefinition(): grpc.ServiceDefinition {
  if (definition) return definition;
  const light = createRequire(import.meta.url)('protobufjs/light') as { Root: typeof Root };
  const root = light.Root.fromJSON(CONTROL_DESCRIPTOR);
  root.resolveAll();
  const service = root.lookupService('vmmsim.v1.Control');
  const out: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const m of service.methodsArray) {
    const req = m.resolvedRequestType as Type;
    const res = m.resolvedResponseType as Type;
    out[m.name] = {
      path: `/vmmsim.v1.Control/${m.name}`,
      requestStream: Boolean(m.requestStream),
      responseStream: Boolean(m.responseStream),
      requestSerialize: serializer(req),
      requestDeserialize: deserializer(req),
      responseSerialize: serializer(res),
      responseDeserialize: deserializer(res),
      // proto-loader's originalName: the method's name in camelCase.
      originalName: m.name.charAt(0).toLowerCase() + m.name.slice(1),
    } satisfies grpc.MethodDefinition<object, object>;
  }
  definition = out as grpc.ServiceDefinition;
  return definition;
}
