import { Ajv } from 'ajv';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { JSON_SCHEMA_FILE, scenarioJsonSchema } from '../../services/scenario/json-schema.js';
import { loadScenario } from '../../services/controller/scenario-load.js';
import { ROOT } from '../helpers/cli.js';

const scenarios = readdirSync(join(ROOT, 'scenarios')).filter((f) => f.endsWith('.yaml')).map((f) => join(ROOT, 'scenarios', f));
const validate = new Ajv({ strict: true, allErrors: true }).compile(scenarioJsonSchema());

describe('the scenario format published as a JSON Schema', () => {
  it(`${JSON_SCHEMA_FILE} is what the CLI's schema generates (regenerate it with \`vmmsim scenario-keys --json-schema\`)`, () => {
    expect(readFileSync(join(ROOT, JSON_SCHEMA_FILE), 'utf8')).toBe(JSON.stringify(scenarioJsonSchema(), null, 2) + '\n');
  });

  it('every shipped scenario names the schema and passes it, as the CLI passes it', () => {
    expect(scenarios.length).toBeGreaterThan(0);
    for (const file of scenarios) {
      const text = readFileSync(file, 'utf8');
      expect(text.split('\n')[0], file).toBe('# yaml-language-server: $schema=./scenario.schema.json');
      expect(validate(parse(text)), `${file}: ${JSON.stringify(validate.errors)}`).toBe(true);
      expect(() => loadScenario(file)).not.toThrow();
    }
  });

  it('refuses what the CLI refuses key by key: an unknown key, a wrong type, a value out of range or outside its list', () => {
    for (const bad of [{ nmae: 'x' }, { seed: 'one' }, { topology: { psmmus: 65 } }, { model: 'nested-smmu' }, { topology: { vsmmu: 'many' } }]) {
      expect(validate(bad), JSON.stringify(bad)).toBe(false);
    }
    expect(validate({ name: 'ok', topology: { psmmus: 4 }, workload: { kind: 'block', queueDepth: 8 } })).toBe(true);
  });
});
