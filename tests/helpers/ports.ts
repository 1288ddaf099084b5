import { createServer, type Server } from 'node:net';

function bind(port: number, host = '127.0.0.1'): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(undefined));
    s.listen({ port, host, exclusive: true }, () => resolve(s));
  });
}

function close(s: Server): Promise<void> {
  return new Promise((resolve) => s.close(() => resolve()));
}

/**
 * A run of `count` consecutive loopback TCP ports that were free a moment ago (each bound and
 * released), starting at a random base so tests running side by side rarely meet.
 */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    const held: Server[] = [];
    let ok = true;
    for (let p = base; p < base + count; p++) {
      const s = await bind(p);
      if (!s) {
        ok = false;
        break;
      }
      held.push(s);
    }
    await Promise.all(held.map(close));
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}

/** Holds a loopback port (as another program would) until released. */
export async function occupyPort(port: number): Promise<{ release(): Promise<void> }> {
  const s = await bind(port);
  if (!s) throw new Error(`port ${port} is not free`);
  return { release: () => close(s) };
}
