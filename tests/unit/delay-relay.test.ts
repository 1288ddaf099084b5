import { createHash, randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { nowNs } from '../../services/runtime/clock.js';
import { DelayRelay, HIGH_WATER_BYTES, parseDelay, parseHostPort } from '../../services/runtime/transport/delay-relay.js';

describe('delay relay options', () => {
  it('reads delays in us, ms and s, and HOST:PORT', () => {
    expect(parseDelay('2ms')).toBe(2);
    expect(parseDelay('500us')).toBe(0.5);
    expect(parseDelay('1.5s')).toBe(1500);
    expect(() => parseDelay('2')).toThrow(/--delay must be a time such as 2ms/);
    expect(parseHostPort('10.1.2.3:7700', '--to')).toEqual({ host: '10.1.2.3', port: 7700 });
    expect(parseHostPort('[::1]:80', '--to')).toEqual({ host: '::1', port: 80 });
    expect(() => parseHostPort('10.1.2.3', '--to')).toThrow(/--to must be HOST:PORT/);
  });
});

describe('delay relay', () => {
  let echo: Server | undefined;
  let relay: DelayRelay | undefined;
  let client: Socket | undefined;
  // The target's own sockets: a half-open one would keep its server from closing.
  const accepted = new Set<Socket>();
  afterEach(async () => {
    client?.destroy();
    await relay?.close();
    for (const s of accepted) s.destroy();
    accepted.clear();
    const server = echo;
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    echo = relay = client = undefined;
  });

  it('holds every byte to the target for the delay, in order, and passes the replies at once', async () => {
    // The target stamps when each chunk arrives and echoes it back.
    const arrived: { at: number; text: string }[] = [];
    echo = createServer((s) => s.on('data', (d: Buffer) => {
      arrived.push({ at: nowNs(), text: d.toString() });
      s.write(d);
    }));
    await new Promise<void>((resolve) => echo?.listen(0, '127.0.0.1', resolve));
    const port = (echo.address() as { port: number }).port;
    const delayMs = 30;
    relay = new DelayRelay({ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port }, delayMs);
    const bound = await relay.start();
    const c = connect(bound.port, '127.0.0.1');
    client = c;
    await new Promise<void>((resolve) => c.once('connect', () => resolve()));
    let back = '';
    c.on('data', (d: Buffer) => (back += d.toString()));

    const sent: number[] = [];
    for (const word of ['one ', 'two ', 'three ']) {
      sent.push(nowNs());
      c.write(word);
      await new Promise((r) => setTimeout(r, 5));
    }
    while (back.length < 'one two three '.length) await new Promise((r) => setTimeout(r, 5));
    expect(back).toBe('one two three ');
    expect(arrived.map((a) => a.text).join('')).toBe('one two three ');
    // Nothing reached the target before its delay was up: a timer can be late, never early.
    const first = arrived[0]?.at ?? 0;
    expect(first - (sent[0] ?? 0)).toBeGreaterThanOrEqual(delayMs * 1e6);
    const last = arrived[arrived.length - 1]?.at ?? 0;
    expect(last - (sent[2] ?? 0)).toBeGreaterThanOrEqual(delayMs * 1e6);
  });

  /** A target that records what it receives, with when, and when the client's FIN came. */
  async function target(onSocket?: (s: Socket) => void): Promise<{ port: number; got: { at: number; data: Buffer }[]; ended: Promise<number> }> {
    const got: { at: number; data: Buffer }[] = [];
    let resolveEnded: (at: number) => void = () => undefined;
    const ended = new Promise<number>((resolve) => (resolveEnded = resolve));
    // Half-open, as a gRPC peer is: it may still answer after the client's FIN.
    echo = createServer({ allowHalfOpen: true }, (s) => {
      accepted.add(s);
      s.on('data', (d: Buffer) => got.push({ at: nowNs(), data: d }));
      s.on('end', () => resolveEnded(nowNs()));
      onSocket?.(s);
    });
    await new Promise<void>((resolve) => echo?.listen(0, '127.0.0.1', resolve));
    return { port: (echo.address() as { port: number }).port, got, ended };
  }

  async function through(port: number, delayMs: number): Promise<Socket> {
    relay = new DelayRelay({ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port }, delayMs);
    const bound = await relay.start();
    const c = connect({ port: bound.port, host: '127.0.0.1', allowHalfOpen: true });
    client = c;
    await new Promise<void>((resolve) => c.once('connect', () => resolve()));
    return c;
  }

  it('delivers the bytes written just before the client half-closes, then the FIN, and still carries replies', async () => {
    const delayMs = 30;
    const t = await target((s) => s.on('end', () => s.end('bye')));
    const c = await through(t.port, delayMs);
    let back = '';
    c.on('data', (d: Buffer) => (back += d.toString()));
    const backEnded = new Promise<void>((resolve) => c.once('end', () => resolve()));
    const sentAt = nowNs();
    c.write('last ');
    c.end('words');
    const finAt = await t.ended;
    expect(Buffer.concat(t.got.map((g) => g.data)).toString()).toBe('last words');
    // Held for the delay, FIN included: it reaches the target after the bytes, not at once.
    expect((t.got[0]?.at ?? 0) - sentAt).toBeGreaterThanOrEqual(delayMs * 1e6);
    expect(finAt).toBeGreaterThanOrEqual(t.got[t.got.length - 1]?.at ?? Infinity);
    // The half-closed client still gets the target's answer, then its FIN.
    await backEnded;
    expect(back).toBe('bye');
  });

  it('stops reading the client while the target does not read, and loses nothing', async () => {
    // Twice what the relay may hold: without backpressure it would hold most of it.
    const payload = randomBytes(2 * HIGH_WATER_BYTES);
    const t = await target((s) => {
      s.pause();
      setTimeout(() => s.resume(), 300);
    });
    const c = await through(t.port, 1);
    let most = 0;
    const sample = setInterval(() => (most = Math.max(most, relay?.heldBytes() ?? 0)), 2);
    c.end(payload);
    await t.ended;
    clearInterval(sample);
    const got = Buffer.concat(t.got.map((g) => g.data));
    expect(got.length).toBe(payload.length);
    expect(createHash('sha256').update(got).digest('hex')).toBe(createHash('sha256').update(payload).digest('hex'));
    // Up to the bound, plus what a paused socket may still have read (well under 1 MiB).
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(HIGH_WATER_BYTES + 1024 * 1024);
  });

  it('closes the client when the target refuses it', async () => {
    const free = createServer();
    await new Promise<void>((resolve) => free.listen(0, '127.0.0.1', resolve));
    const port = (free.address() as { port: number }).port;
    await new Promise<void>((resolve) => free.close(() => resolve()));
    relay = new DelayRelay({ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port }, 1);
    const bound = await relay.start();
    const c = connect(bound.port, '127.0.0.1');
    client = c;
    c.on('error', () => undefined);
    await new Promise<void>((resolve) => c.once('close', () => resolve()));
    expect(c.destroyed).toBe(true);
  });
});
