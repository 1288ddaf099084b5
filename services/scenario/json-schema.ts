import { SCENARIO_SCHEMA, type Field, type ObjectField } from './schema.js';

/** Where the shipped scenarios find the JSON Schema (a yaml-language-server modeline names it). */
export const JSON_SCHEMA_FILE = 'scenarios/scenario.schema.json';

type JsonSchema = Record<string, unknown>;

function fieldSchema(f: Field): JsonSchema {
  switch (f.type) {
    case 'object':
      return objectSchema(f);
    case 'string':
      return { type: 'string', description: f.doc, default: f.default, maxLength: f.maxLength, ...(f.enum ? { enum: [...(f.supported ?? f.enum)] } : { minLength: 1 }) };
    case 'boolean':
      return { type: 'boolean', description: f.doc, default: f.default };
    default:
      return { type: f.type, description: f.doc, default: f.default, minimum: f.min, maximum: f.supportedMax ?? f.max };
  }
}

function objectSchema(o: ObjectField): JsonSchema {
  return {
    type: 'object',
    description: o.doc,
    additionalProperties: false,
    properties: Object.fromEntries(Object.entries(o.fields).map(([k, f]) => [k, fieldSchema(f)])),
  };
}

/**
 * The scenario format as a JSON Schema (draft-07, which editors' YAML language servers read), made
 * from the one schema the CLI validates with: every key, its type, bounds, allowed values, default
 * and documentation. Cross-key rules (a trace only with trace-replay, devices >= VMs) stay with the
 * CLI, which says what is wrong.
 */
export function scenarioJsonSchema(): JsonSchema {
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'vmmsim scenario',
    ...objectSchema(SCENARIO_SCHEMA),
  };
}
