import { existsSync, statSync } from 'node:fs';
import { guestRamFile } from './board.js';
import { FileMemory, type Memory } from './memory.js';

/** One open guest RAM file of this process, and which file (inode) it is. */
interface Mapped {
  mem: FileMemory;
  ino: number;
}

const mapped = new Map<string, Mapped>();

/**
 * A host process's mapping of VM `vm`'s RAM (a VMM maps its guest's memory, and so does the
 * kernel), for devices that read queues and write completions in place. The guest creates the
 * file, so it is opened on first use; there is one mapping per file per process, reopened when a
 * new run replaced the file, and files of finished runs whose folder is gone are closed. Returns
 * undefined while the file does not exist.
 */
export function mapGuestRam(ramDir: string, vm: number): Memory | undefined {
  const path = guestRamFile(ramDir, vm);
  for (const [p, m] of mapped) {
    if (p !== path && !existsSync(p)) {
      m.mem.close();
      mapped.delete(p);
    }
  }
  let ino: number;
  try {
    ino = statSync(path).ino;
  } catch {
    return undefined;
  }
  const cur = mapped.get(path);
  if (cur?.ino === ino) return cur.mem;
  cur?.mem.close();
  const mem = new FileMemory(path, 'open');
  mapped.set(path, { mem, ino });
  return mem;
}
