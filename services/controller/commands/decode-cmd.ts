/** `vmmsim decode-cmd W0 W1 [...]`: SMMUv3 commands, given as their two 64-bit words, decoded. */
import { CMD_SIZE, decodeCommand, formatCommand, parseHexWord } from '../../formats/smmu/commands.js';
import { parse, usageError } from '../cli/options.js';

export const HELP = `usage: vmmsim decode-cmd W0 W1 [W0 W1 ...] [--json]

Decodes SMMUv3 commands, each given as its two 64-bit words in 0x-prefixed hex (as QEMU traces and
kernel logs print them). Prints opcode, name and fields; an unknown opcode decodes as ILLEGAL with
error CERROR_ILL.`;

export const OPTIONS = { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;

export async function command(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  if (positionals.length === 0 || positionals.length % 2 !== 0) throw usageError(`decode-cmd takes pairs of words (W0 W1), got ${positionals.length} word(s)`);
  const out = [];
  for (let i = 0; i < positionals.length; i += 2) {
    const buf = Buffer.alloc(CMD_SIZE);
    try {
      buf.writeBigUInt64LE(parseHexWord(positionals[i] as string), 0);
      buf.writeBigUInt64LE(parseHexWord(positionals[i + 1] as string), 8);
    } catch (err) {
      throw usageError(`command ${i / 2}: ${(err as Error).message}`);
    }
    out.push(formatCommand(decodeCommand(buf, 0)));
  }
  if (values.json) process.stdout.write(JSON.stringify(out.length === 1 ? out[0] : out, null, 2) + '\n');
  else {
    for (const c of out) {
      const fields = Object.entries(c.fields).map(([k, v]) => `${k}=${v}`).join(' ');
      process.stdout.write(`0x${c.opcode.toString(16).padStart(2, '0')} ${c.name}${c.error ? ` (${c.error})` : ''}${fields ? ' ' + fields : ''}\n`);
    }
  }
  return 0;
}
