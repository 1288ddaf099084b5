import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { parseArgs } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { loadProfile } from '../../services/cost/profile.js';
import { loadPeersFile, type PeersFile } from '../../services/runtime/peers.js';
import { resolveScenario } from '../../services/scenario/validate.js';
import type { Scenario } from '../../services/scenario/schema.js';
import { endpointName, ROLES, type Role } from '../../services/runtime/topology.js';
import { loadTokenFile } from '../../services/runtime/transport/auth.js';
import { RUN_OPTIONS } from '../../services/controller/cli/options.js';
import { parseServeArgs } from '../../services/controller/commands/serve.js';
import { processSpecs } from '../../services/controller/session.js';
import { ROOT } from '../helpers/cli.js';

/**
 * The Kubernetes base (deploy/k8s) as kubectl renders it: the objects exist and point at each
 * other, the peers file and the scenario agree with the replicas, and every pod is probed, scraped
 * and locked down the same way.
 */

interface Probe {
  grpc?: { port: number; service?: string };
  httpGet?: object;
  tcpSocket?: object;
  exec?: object;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports?: { name?: string; containerPort: number }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; capabilities?: { drop?: string[]; add?: string[] } };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }[];
}
interface KeyToPath {
  key: string;
  path: string;
  mode?: number;
}
interface Volume {
  name: string;
  configMap?: { name: string; items?: KeyToPath[]; defaultMode?: number };
  hostPath?: { path: string; type?: string };
  emptyDir?: object;
  secret?: { secretName: string; items?: KeyToPath[]; defaultMode?: number; optional?: boolean };
  projected?: {
    defaultMode?: number;
    sources: { configMap?: { name: string; items?: KeyToPath[]; optional?: boolean }; secret?: { name: string; items?: KeyToPath[]; optional?: boolean } }[];
  };
}
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; runAsGroup?: number; fsGroup?: number };
  affinity?: { podAffinity?: { requiredDuringSchedulingIgnoredDuringExecution?: { labelSelector: { matchLabels: Record<string, string> }; topologyKey: string }[] } };
  volumes?: Volume[];
}
interface Meta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Kube {
  kind: string;
  metadata: Meta;
  spec?: {
    replicas?: number;
    serviceName?: string;
    clusterIP?: string;
    selector?: { matchLabels?: Record<string, string> } & Record<string, unknown>;
    ports?: { name?: string; port: number; targetPort?: string | number }[];
    template?: { metadata: Meta; spec: PodSpec };
    // NetworkPolicy
    podSelector?: LabelSelector;
    policyTypes?: string[];
    ingress?: IngressRule[];
  };
  data?: Record<string, string>;
}
interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }[];
}
interface IngressRule {
  from?: { podSelector?: LabelSelector; namespaceSelector?: LabelSelector; ipBlock?: { cidr: string } }[];
  ports?: { protocol?: string; port?: number | string; endPort?: number }[];
}
/** A pod as a NetworkPolicy sees it: its labels, its namespace's name and a port it is reached on. */
interface Peer {
  labels: Record<string, string>;
  namespace: string;
}

const GRPC_PORT_NAME = 'grpc';
const METRICS_PORT = 9464;

function kubectlMissing(): string | undefined {
  const r = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  return r.status === 0 ? undefined : 'kubectl is not installed (it renders deploy/k8s)';
}

const skip = kubectlMissing();

/** Whether every label the selector asks for is on the pod. */
function selects(selector: Record<string, unknown> | undefined, labels: Record<string, string> | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** A Kubernetes label selector (matchLabels and matchExpressions); the empty selector selects every pod. */
function matchesSelector(sel: LabelSelector, labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  if (!Object.entries(sel.matchLabels ?? {}).every(([k, v]) => l[k] === v)) return false;
  return (sel.matchExpressions ?? []).every((e) => {
    const v = l[e.key];
    switch (e.operator) {
      case 'In':
        return v !== undefined && (e.values ?? []).includes(v);
      case 'NotIn':
        return v === undefined || !(e.values ?? []).includes(v);
      case 'Exists':
        return v !== undefined;
      case 'DoesNotExist':
        return v === undefined;
    }
  });
}

/**
 * Whether the NetworkPolicies in `policies` let `from` open a TCP connection to `to` on `port`
 * (named `portName` in the container), as an enforcing network plugin would: a pod no policy
 * selects for Ingress admits everyone; else some rule of a policy that selects it must admit both.
 * An ipBlock is taken as admitting anyone, which only errs towards failing the tests.
 */
function admits(policies: Kube[], to: Peer, from: Peer, port: number, portName: string): boolean {
  const selecting = policies.filter(
    (p) => p.metadata.namespace === to.namespace && (p.spec?.policyTypes ?? ['Ingress']).includes('Ingress') && matchesSelector(p.spec?.podSelector ?? {}, to.labels),
  );
  if (selecting.length === 0) return true;
  return selecting.some((p) =>
    (p.spec?.ingress ?? []).some((rule) => {
      const portOk = rule.ports === undefined || rule.ports.some((rp) => (rp.protocol ?? 'TCP') === 'TCP' && (rp.port === undefined || rp.port === port || rp.port === portName || (typeof rp.port === 'number' && rp.endPort !== undefined && port >= rp.port && port <= rp.endPort)));
      const peerOk = rule.from === undefined || rule.from.some((f) => {
        if (f.ipBlock) return true;
        // A podSelector alone means the policy's own namespace.
        const nsOk = f.namespaceSelector ? matchesSelector(f.namespaceSelector, { 'kubernetes.io/metadata.name': from.namespace }) : from.namespace === p.metadata.namespace;
        return nsOk && (f.podSelector === undefined || matchesSelector(f.podSelector, from.labels));
      });
      return portOk && peerOk;
    }),
  );
}

function argAfter(args: readonly string[] | undefined, flag: string): string | undefined {
  const i = args?.indexOf(flag) ?? -1;
  return i >= 0 ? args?.[i + 1] : undefined;
}

/** The objects `kubectl kustomize DIR` renders. */
function render(dir: string): Kube[] {
  const r = spawnSync('kubectl', ['kustomize', join(ROOT, 'deploy', dir)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`kubectl kustomize deploy/${dir} failed: ${r.stderr}`);
  const docs = parseAllDocuments(r.stdout);
  for (const d of docs) if (d.errors.length > 0) throw new Error(`the render of deploy/${dir} is not valid YAML: ${d.errors[0]?.message}`);
  return docs.map((d) => d.toJS() as Kube);
}

/** The Secret every pod reads the run's token from, and its key: created by the operator, never rendered. */
const TOKEN_SECRET = 'vmmsim-run-token';
const TOKEN_KEY = 'token';
/** Kubelet's mode for a ConfigMap, Secret or projected file when neither the item nor the volume sets one. */
const KUBELET_DEFAULT_MODE = 0o644;

type Mount = NonNullable<Container['volumeMounts']>[number];

/** A key of a ConfigMap or Secret that a container sees as a file. */
interface FileSource {
  kind: 'configMap' | 'secret';
  name: string;
  key: string;
  /** The file's path inside its volume. */
  path: string;
  /** Its mode in the pod: the item's, else the volume's default, else kubelet's, plus the group read bit fsGroup adds. */
  mode: number;
  mount: Mount;
}

/**
 * Where the file a container opens at `file` comes from: the mount that holds it (the deepest),
 * its volume, and the ConfigMap or Secret key kubelet puts at that path (a source without items
 * puts every key at the top; `keys` tells a ConfigMap's keys, a Secret outside the render may hold
 * any).
 */
function fileSource(spec: PodSpec, c: Container, file: string, keys: (kind: 'configMap' | 'secret', name: string) => string[] | undefined): FileSource | undefined {
  const mount = (c.volumeMounts ?? []).filter((m) => file.startsWith(`${m.mountPath}/`)).sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  const volume = spec.volumes?.find((v) => v.name === mount?.name);
  if (!mount || !volume) return undefined;
  const path = posix.join(mount.subPath ?? '', file.slice(mount.mountPath.length + 1));
  type Source = { kind: 'configMap' | 'secret'; name: string; items?: KeyToPath[] | undefined };
  let sources: Source[] = [];
  let defaultMode: number | undefined;
  if (volume.configMap) [sources, defaultMode] = [[{ kind: 'configMap', ...volume.configMap }], volume.configMap.defaultMode];
  if (volume.secret) [sources, defaultMode] = [[{ kind: 'secret', name: volume.secret.secretName, items: volume.secret.items }], volume.secret.defaultMode];
  if (volume.projected) {
    defaultMode = volume.projected.defaultMode;
    sources = volume.projected.sources.flatMap((s): Source[] => (s.configMap ? [{ kind: 'configMap', ...s.configMap }] : s.secret ? [{ kind: 'secret', ...s.secret }] : []));
  }
  for (const src of sources) {
    const item = src.items?.find((i) => i.path === path);
    const key = src.items ? item?.key : !path.includes('/') && (keys(src.kind, src.name)?.includes(path) ?? true) ? path : undefined;
    if (key === undefined) continue;
    const fsGroup = spec.securityContext?.fsGroup !== undefined;
    // Kubelet gives a read-only volume's files to the fsGroup and adds the owner and group read bits.
    const mode = (item?.mode ?? defaultMode ?? KUBELET_DEFAULT_MODE) | (fsGroup ? 0o440 : 0);
    return { kind: src.kind, name: src.name, key, path, mode, mount };
  }
  return undefined;
}

/**
 * Why vmmsim's token loader refuses the file `src` as kubelet lays it out, or undefined if it takes
 * it. Kubelet writes a Secret, ConfigMap or projected volume (its AtomicWriter) as the files in a
 * timestamped folder, `..data` a symlink to that folder, and every top-level name a symlink into
 * `..data`; a subPath mount is the resolved file itself.
 */
function tokenProblem(src: FileSource): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'vmmsim-k8s-volume-'));
  try {
    const stamp = '..2026_01_01_00_00_00.000000001';
    const real = join(dir, stamp, src.path);
    mkdirSync(dirname(real), { recursive: true });
    writeFileSync(real, randomBytes(32).toString('hex'));
    chmodSync(real, src.mode);
    symlinkSync(stamp, join(dir, '..data'));
    const top = src.path.split('/')[0] ?? '';
    symlinkSync(posix.join('..data', top), join(dir, top));
    loadTokenFile(src.mount.subPath === undefined ? join(dir, src.path) : real);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The keys of the render's ConfigMaps and Secrets, by kind and name (undefined: not in the render). */
function renderedKeys(objects: Kube[]): (kind: 'configMap' | 'secret', name: string) => string[] | undefined {
  return (kind, name) => {
    const found = objects.find((x) => x.kind === (kind === 'configMap' ? 'ConfigMap' : 'Secret') && x.metadata.name === name);
    return found ? Object.keys(found.data ?? {}) : undefined;
  };
}

/** The run-token file a workload's process is given: `run`'s --token-file for the Job, `serve`'s for a role. */
function tokenFileOf(o: Kube): string | undefined {
  const args = o.spec?.template?.spec.containers[0]?.args ?? [];
  if (o.kind === 'Job') return parseArgs({ args: args.slice(1), options: RUN_OPTIONS, allowPositionals: true, strict: true }).values['token-file'];
  return parseServeArgs(args.slice(1).map((a) => a.replace('$(POD_INDEX)', '0')))?.tokenFile;
}

/**
 * The workload's process gets --token-file, and the file is the key `token` of the Secret
 * vmmsim-run-token, mounted read-only, readable by the pod's group (fsGroup = the process's group)
 * and by no other user, and accepted by vmmsim's own loader as kubelet lays it out.
 */
function expectRunToken(objects: Kube[], o: Kube): void {
  const what = `${o.kind} ${o.metadata.name}`;
  const spec = o.spec?.template?.spec as PodSpec;
  const c = spec.containers[0] as Container;
  const file = tokenFileOf(o);
  expect(file, `${what} passes --token-file`).toBeDefined();
  const src = fileSource(spec, c, file ?? '', renderedKeys(objects));
  expect(src, `${what}: ${file} is a mounted file`).toBeDefined();
  expect([src?.kind, src?.name, src?.key], `${what}: ${file} comes from`).toEqual(['secret', TOKEN_SECRET, TOKEN_KEY]);
  expect(src?.mount.readOnly, `${what}: the token is mounted read-only`).toBe(true);
  expect((src?.mode ?? 0) & 0o007, `${what}: the token is not world-readable`).toBe(0);
  expect((src?.mode ?? 0) & 0o040, `${what}: the token is group-readable`).toBe(0o040);
  expect(spec.securityContext?.fsGroup, `${what}: the token's group is the process's`).toBe(spec.securityContext?.runAsGroup);
  expect(src && tokenProblem(src), `${what}: vmmsim reads ${file} as kubelet lays it out`).toBeUndefined();
}

describe.skipIf(skip !== undefined)(skip ? `deploy/k8s (skipped: ${skip})` : 'deploy/k8s', () => {
  let objects: Kube[];
  let peers: PeersFile;
  let scenario: Scenario;

  const all = (kind: string): Kube[] => objects.filter((o) => o.kind === kind);
  const one = (kind: string, name: string): Kube => {
    const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
    if (!o) throw new Error(`no ${kind} ${name} in the render`);
    return o;
  };
  const podSpec = (o: Kube): PodSpec => {
    const s = o.spec?.template?.spec;
    if (!s) throw new Error(`${o.kind} ${o.metadata.name} has no pod template`);
    return s;
  };
  const main = (o: Kube): Container => {
    const c = podSpec(o).containers[0];
    if (!c || podSpec(o).containers.length !== 1) throw new Error(`${o.metadata.name} should run one container`);
    return c;
  };
  /** The workload of each role: StatefulSet or Deployment named after it. */
  const workload = (role: Role): Kube => {
    const o = objects.find((x) => (x.kind === 'StatefulSet' || x.kind === 'Deployment') && x.metadata.name === role);
    if (!o) throw new Error(`no workload for ${role}`);
    return o;
  };
  const workloads = (): Kube[] => [...all('StatefulSet'), ...all('Deployment'), ...all('Job')];
  const configMap = (): Kube => {
    const maps = all('ConfigMap');
    expect(maps).toHaveLength(1);
    return maps[0] as Kube;
  };

  beforeAll(() => {
    objects = render('k8s');
    // Read by vmmsim's own reader, as `run --connect` and `serve --peers` will.
    const dir = mkdtempSync(join(tmpdir(), 'vmmsim-k8s-'));
    try {
      const file = join(dir, 'peers.yaml');
      writeFileSync(file, configMap().data?.['peers.yaml'] ?? '');
      peers = loadPeersFile(file);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    scenario = resolveScenario(parse(configMap().data?.['scenario.yaml'] ?? ''));
  });

  it('runs the pSMMUs as a StatefulSet behind a headless Service of the same name', () => {
    const sts = one('StatefulSet', 'psmmu');
    const svc = one('Service', 'psmmu');
    expect(svc.spec?.clusterIP).toBe('None');
    expect(sts.spec?.serviceName).toBe('psmmu');
    expect(selects(sts.spec?.selector?.matchLabels, sts.spec?.template?.metadata.labels)).toBe(true);
    expect(selects(svc.spec?.selector, sts.spec?.template?.metadata.labels)).toBe(true);
    expect(sts.spec?.replicas).toBeGreaterThanOrEqual(1);
  });

  it('runs every role, indexed ones from the pod ordinal, singletons once', () => {
    for (const role of ROLES) {
      const w = workload(role);
      const c = main(w);
      expect(c.args?.slice(0, 2), role).toEqual(['serve', role]);
      if (role === 'kvm' || role === 'vfio') {
        expect(w.kind, role).toBe('Deployment');
        expect(w.spec?.replicas, role).toBe(1);
        continue;
      }
      expect(w.kind, role).toBe('StatefulSet');
      // Kubernetes expands $(VAR) in args from the container's env.
      expect(argAfter(c.args, '--index'), role).toBe('$(POD_INDEX)');
      const env = c.env?.find((e) => e.name === 'POD_INDEX');
      expect(env?.valueFrom?.fieldRef?.fieldPath, role).toBe("metadata.labels['apps.kubernetes.io/pod-index']");
    }
  });

  it('gives every role a command line that `vmmsim serve` accepts', () => {
    for (const role of ROLES) {
      const c = main(workload(role));
      const argv = (c.args ?? []).slice(1).map((a) => a.replace('$(POD_INDEX)', '1'));
      const parsed = parseServeArgs(argv);
      expect(parsed?.role, role).toBe(role);
      expect(parsed?.index, role).toBe(role === 'kvm' || role === 'vfio' ? 0 : 1);
      expect(parsed?.listen, role).toEqual({ kind: 'tcp', host: '0.0.0.0', port: 7700 });
      expect(parsed?.peers, role).toBe('/etc/vmmsim/peers.yaml');
      expect(parsed?.telemetry.metricsPort, role).toBe(METRICS_PORT);
      expect(parsed?.telemetry.metricsHost, role).toBe('0.0.0.0');
    }
  });

  it('probes every role with gRPC health (service "") on the port it serves', () => {
    for (const role of ROLES) {
      const c = main(workload(role));
      const listen = argAfter(c.args, '--listen') ?? '';
      expect(listen, role).toMatch(/^0\.0\.0\.0:\d+$/);
      const port = Number(listen.split(':')[1]);
      expect(c.ports?.find((p) => p.name === GRPC_PORT_NAME)?.containerPort, role).toBe(port);
      for (const probe of [c.readinessProbe, c.livenessProbe]) {
        expect(probe?.grpc?.port, role).toBe(port);
        expect(probe?.grpc?.service ?? '', role).toBe('');
        expect(probe?.httpGet ?? probe?.tcpSocket ?? probe?.exec, role).toBeUndefined();
      }
    }
  });

  it('exposes metrics on port 9464 named metrics, announced to Prometheus', () => {
    for (const role of ROLES) {
      const w = workload(role);
      const c = main(w);
      expect(c.ports?.find((p) => p.name === 'metrics')?.containerPort, role).toBe(METRICS_PORT);
      expect(argAfter(c.args, '--metrics-port'), role).toBe(String(METRICS_PORT));
      const a = w.spec?.template?.metadata.annotations;
      expect(a?.['prometheus.io/scrape'], role).toBe('true');
      expect(a?.['prometheus.io/port'], role).toBe(String(METRICS_PORT));
      expect(a?.['prometheus.io/path'], role).toBe('/metrics');
      const svc = one('Service', role);
      expect(svc.spec?.ports?.find((p) => p.name === 'metrics')?.targetPort, role).toBe('metrics');
    }
  });

  it('names in the peers file exactly the processes the scenario needs', () => {
    const needed = processSpecs(scenario).map((s) => endpointName(s.role, s.index));
    expect(peers.endpoints.map((e) => e.name).sort()).toEqual([...needed].sort());
  });

  it('runs a scenario whose profile ships in the image (profiles/)', () => {
    expect(loadProfile(scenario.profile).path.startsWith(join(ROOT, 'profiles'))).toBe(true);
  });

  it('sizes the pods from the scenario: pSMMU count = psmmu replicas, VM count = qemu and guest replicas', () => {
    expect(one('StatefulSet', 'psmmu').spec?.replicas).toBe(scenario.topology.psmmus);
    expect(one('StatefulSet', 'qemu').spec?.replicas).toBe(scenario.topology.vms);
    expect(one('StatefulSet', 'guest').spec?.replicas).toBe(scenario.topology.vms);
  });

  it('gives every peers-file address a Service in the render that reaches that process', () => {
    for (const ep of peers.endpoints) {
      const m = /^([a-z0-9.-]+):(\d+)$/.exec(ep.address);
      expect(m, `${ep.name}: ${ep.address} is HOST:PORT`).not.toBeNull();
      const [, host = '', port = ''] = m ?? [];
      const parts = host.split('.');
      let svc: Kube;
      let target: Kube;
      if (parts.length === 2) {
        // POD.SERVICE: a StatefulSet pod's stable name through its headless Service.
        const [pod = '', service = ''] = parts;
        svc = one('Service', service);
        expect(svc.spec?.clusterIP, ep.address).toBe('None');
        const sts = all('StatefulSet').find((s) => s.spec?.serviceName === service);
        if (!sts) throw new Error(`no StatefulSet governed by Service ${service}`);
        const ordinal = /^(.*)-(\d+)$/.exec(pod);
        expect(ordinal?.[1], ep.address).toBe(sts.metadata.name);
        expect(Number(ordinal?.[2]), ep.address).toBeLessThan(sts.spec?.replicas ?? 1);
        expect(pod, 'the endpoint is named as its pod').toBe(ep.name);
        target = sts;
      } else {
        expect(parts, ep.address).toHaveLength(1);
        svc = one('Service', host);
        const matches = workloads().filter((w) => selects(svc.spec?.selector, w.spec?.template?.metadata.labels));
        expect(matches.map((w) => w.metadata.name), ep.address).toHaveLength(1);
        expect(host, 'the endpoint is named as its Service').toBe(ep.name);
        target = matches[0] as Kube;
      }
      expect(selects(svc.spec?.selector, target.spec?.template?.metadata.labels), ep.address).toBe(true);
      const sp = svc.spec?.ports?.find((p) => p.port === Number(port));
      expect(sp, `${ep.address}: Service ${svc.metadata.name} has port ${port}`).toBeDefined();
      const served = main(target).ports?.find((p) => p.name === sp?.targetPort || p.containerPort === sp?.targetPort);
      expect(served?.name, ep.address).toBe(GRPC_PORT_NAME);
      expect(argAfter(main(target).args, '--listen'), ep.address).toBe(`0.0.0.0:${served?.containerPort}`);
    }
  });

  it('runs the controller as a Job against the peers file, with the scenario, both from the ConfigMap', () => {
    const job = one('Job', 'vmmsim-run');
    const c = main(job);
    expect(c.args?.slice(0, 4)).toEqual(['run', '/etc/vmmsim/scenario.yaml', '--connect', '/etc/vmmsim/peers.yaml']);
    // Options `run` knows, with the scenario as its one positional.
    const { values, positionals } = parseArgs({ args: (c.args ?? []).slice(1), options: RUN_OPTIONS, allowPositionals: true, strict: true });
    expect(positionals).toEqual(['/etc/vmmsim/scenario.yaml']);
    expect(values.connect).toBe('/etc/vmmsim/peers.yaml');
    for (const [file, key] of [[positionals[0] ?? '', 'scenario.yaml'], [values.connect ?? '', 'peers.yaml']] as const) {
      const src = fileSource(podSpec(job), c, file, renderedKeys(objects));
      expect([src?.kind, src?.name, src?.key], file).toEqual(['configMap', configMap().metadata.name, key]);
    }
    expect(Object.keys(configMap().data ?? {}).sort()).toEqual(['peers.yaml', 'scenario.yaml']);
    // The root filesystem is read-only: results go to a volume.
    const out = argAfter(c.args, '--out') ?? '';
    expect(c.volumeMounts?.some((m) => m.mountPath === out && !m.readOnly)).toBe(true);
    expect(podSpec(job).containers[0]?.securityContext?.readOnlyRootFilesystem).toBe(true);
  });

  it('gives every role the peers file from the same ConfigMap', () => {
    for (const role of ROLES) {
      const w = workload(role);
      const c = main(w);
      const file = argAfter(c.args, '--peers') ?? '';
      const src = fileSource(podSpec(w), c, file, renderedKeys(objects));
      expect([src?.kind, src?.name, src?.key], role).toEqual(['configMap', configMap().metadata.name, 'peers.yaml']);
    }
  });

  it('proves every role and the controller Job with the run token: the Secret vmmsim-run-token, as a file --token-file takes', () => {
    for (const w of [...ROLES.map(workload), one('Job', 'vmmsim-run')]) expectRunToken(objects, w);
  });

  it('serves no role with --insecure', () => {
    for (const role of ROLES) {
      const c = main(workload(role));
      expect(c.args, role).not.toContain('--insecure');
      expect(parseServeArgs((c.args ?? []).slice(1).map((a) => a.replace('$(POD_INDEX)', '0')))?.insecure, role).toBe(false);
    }
  });

  it('names the token Secret without holding it: the render has no Secret', () => {
    expect(all('Secret')).toEqual([]);
  });

  it('would refuse a token at the top of a Secret volume, or one every user can read (the check above bites)', () => {
    const c: Container = { name: 'vmmsim', image: 'vmmsim', volumeMounts: [{ name: 't', mountPath: '/etc/vmmsim/token', readOnly: true }] };
    const none = (): undefined => undefined;
    const top: PodSpec = { containers: [c], securityContext: { runAsGroup: 10001, fsGroup: 10001 }, volumes: [{ name: 't', secret: { secretName: TOKEN_SECRET, defaultMode: 0o440 } }] };
    const src = fileSource(top, c, '/etc/vmmsim/token/token', none);
    expect(src?.path).toBe('token');
    expect(src && tokenProblem(src)).toMatch(/symbolic link/);
    const open: PodSpec = { containers: [c], volumes: [{ name: 't', secret: { secretName: TOKEN_SECRET, items: [{ key: TOKEN_KEY, path: 'token/token' }] } }] };
    const world = fileSource(open, c, '/etc/vmmsim/token/token/token', none);
    expect(world?.mode).toBe(KUBELET_DEFAULT_MODE);
    expect(world && tokenProblem(world)).toMatch(/readable by every user/);
    // The same volume with the manifests' mode and fsGroup: taken.
    const fixed: PodSpec = { ...open, securityContext: { runAsGroup: 10001, fsGroup: 10001 }, volumes: [{ name: 't', secret: { secretName: TOKEN_SECRET, defaultMode: 0o440, items: [{ key: TOKEN_KEY, path: 'token/token' }] } }] };
    const ok = fileSource(fixed, c, '/etc/vmmsim/token/token/token', none);
    expect(ok && tokenProblem(ok)).toBeUndefined();
  });

  it('uses one image everywhere', () => {
    const images = new Set(workloads().flatMap((w) => [...podSpec(w).containers, ...(podSpec(w).initContainers ?? [])].map((c) => c.image)));
    expect([...images]).toHaveLength(1);
    expect([...images][0]).toMatch(/^vmmsim(:|$)/);
  });

  it('puts every role on one node, sharing the memory folder the peers file names', () => {
    const ramDir = peers.ramDir ?? '';
    expect(ramDir).not.toBe('');
    const hostPaths = new Set<string>();
    const roleLabels = ROLES.map((r) => workload(r).spec?.template?.metadata.labels);
    for (const role of ROLES) {
      const w = workload(role);
      const mount = main(w).volumeMounts?.find((m) => m.mountPath === ramDir);
      const volume = podSpec(w).volumes?.find((v) => v.name === mount?.name);
      expect(volume?.hostPath?.path, role).toMatch(/^\/dev\/shm\//);
      hostPaths.add(volume?.hostPath?.path ?? '');
      const terms = podSpec(w).affinity?.podAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? [];
      expect(terms, role).toHaveLength(1);
      expect(terms[0]?.topologyKey, role).toBe('kubernetes.io/hostname');
      for (const labels of roleLabels) expect(selects(terms[0]?.labelSelector.matchLabels, labels), role).toBe(true);
    }
    expect(hostPaths.size).toBe(1);
  });

  it('runs the role and controller containers as non-root on a read-only root filesystem, within limits', () => {
    for (const w of workloads()) {
      const spec = podSpec(w);
      expect(spec.securityContext?.runAsNonRoot, w.metadata.name).toBe(true);
      expect(spec.securityContext?.runAsUser, w.metadata.name).toBeGreaterThan(0);
      for (const c of spec.containers) {
        expect(c.securityContext?.readOnlyRootFilesystem, w.metadata.name).toBe(true);
        expect(c.securityContext?.allowPrivilegeEscalation, w.metadata.name).toBe(false);
        expect(c.securityContext?.capabilities?.drop, w.metadata.name).toEqual(['ALL']);
        expect(c.securityContext?.runAsUser, 'no container overrides the pod uid').toBeUndefined();
      }
      for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
        for (const r of ['cpu', 'memory']) {
          expect(c.resources?.requests?.[r], `${w.metadata.name}/${c.name} requests ${r}`).toBeDefined();
          expect(c.resources?.limits?.[r], `${w.metadata.name}/${c.name} limits ${r}`).toBeDefined();
        }
      }
      // The one root step hands the memory folder to the image's uid, and may do nothing else.
      for (const c of spec.initContainers ?? []) {
        expect(c.securityContext?.capabilities?.drop, c.name).toEqual(['ALL']);
        expect([...(c.securityContext?.capabilities?.add ?? [])].sort(), c.name).toEqual(['CHOWN', 'FOWNER']);
        expect(c.command?.join(' '), c.name).toContain(`chown ${spec.securityContext?.runAsUser}:`);
      }
    }
  });

  it('admits to the roles\' gRPC port only the roles and the controller Job, and anyone to metrics', () => {
    const policies = all('NetworkPolicy');
    expect(policies.length).toBeGreaterThan(0);
    const pod = (o: Kube): Peer => ({ labels: o.spec?.template?.metadata.labels ?? {}, namespace: o.metadata.namespace ?? '' });
    const controller = pod(one('Job', 'vmmsim-run'));
    const roles = ROLES.map((r) => pod(workload(r)));
    // A pod of the namespace that is not vmmsim's, and one elsewhere that copies the controller's labels.
    const stranger: Peer = { labels: { app: 'debug' }, namespace: 'vmmsim' };
    const impostor: Peer = { labels: controller.labels, namespace: 'default' };
    for (const role of ROLES) {
      const w = workload(role);
      const to = pod(w);
      const ports = main(w).ports ?? [];
      const grpc = ports.find((p) => p.name === GRPC_PORT_NAME)?.containerPort ?? 0;
      expect(policies.some((p) => p.metadata.namespace === to.namespace && matchesSelector(p.spec?.podSelector ?? {}, to.labels)), `a policy selects ${role}'s pods`).toBe(true);
      expect(admits(policies, to, controller, grpc, GRPC_PORT_NAME), `controller -> ${role}`).toBe(true);
      for (const [i, from] of roles.entries()) expect(admits(policies, to, from, grpc, GRPC_PORT_NAME), `${ROLES[i]} -> ${role}`).toBe(true);
      expect(admits(policies, to, stranger, grpc, GRPC_PORT_NAME), `another pod of the namespace -> ${role}`).toBe(false);
      expect(admits(policies, to, impostor, grpc, GRPC_PORT_NAME), `a pod of another namespace -> ${role}`).toBe(false);
      // Prometheus, wherever it runs, and no other port.
      expect(admits(policies, to, impostor, METRICS_PORT, 'metrics'), `metrics of ${role}`).toBe(true);
      expect(admits(policies, to, impostor, 8080, 'other'), `another port of ${role}`).toBe(false);
    }
  });
});

/**
 * The mutual-TLS overlay (deploy/k8s-mtls): the base with every role given the Secret vmmsim-tls's
 * files and the controller Job its own, the run token kept, and TCP probes, since kubelet's grpc:
 * probes cannot present a client certificate.
 */
describe.skipIf(skip !== undefined)(skip ? `deploy/k8s-mtls (skipped: ${skip})` : 'deploy/k8s-mtls', () => {
  let base: Kube[];
  let objects: Kube[];
  const key = (o: Kube): string => `${o.kind}/${o.metadata.name}`;
  const find = (kind: string, name: string): Kube => {
    const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
    if (!o) throw new Error(`no ${kind} ${name} in the render`);
    return o;
  };
  const spec = (o: Kube): PodSpec => o.spec?.template?.spec as PodSpec;
  const container = (o: Kube): Container => spec(o).containers[0] as Container;
  /** The Secret volume that holds `file` in the pod, through its container's mount. */
  const secretOf = (o: Kube, file: string): { secretName: string; defaultMode?: number } | undefined => {
    const mount = container(o).volumeMounts?.find((m) => posix.dirname(file) === m.mountPath);
    expect(mount?.readOnly, `${o.metadata.name}: ${file} is mounted read-only`).toBe(true);
    return spec(o).volumes?.find((v) => v.name === mount?.name)?.secret;
  };
  /** The files are the Secret's, and its key is readable by the pod's group (fsGroup), not by others. */
  const checkFiles = (o: Kube, files: readonly string[], secretName: string): void => {
    for (const f of files) {
      const secret = secretOf(o, f);
      expect(secret?.secretName, `${o.metadata.name}: ${f}`).toBe(secretName);
      const mode = secret?.defaultMode ?? 0o644;
      expect(mode & 0o007, `${o.metadata.name}: ${f} is not world-readable`).toBe(0);
      expect(mode & 0o040, `${o.metadata.name}: ${f} is group-readable`).toBe(0o040);
    }
    expect(spec(o).securityContext?.fsGroup, o.metadata.name).toBe(spec(o).securityContext?.runAsGroup);
  };

  beforeAll(() => {
    base = render('k8s');
    objects = render('k8s-mtls');
  });

  it('renders the base\'s objects, the NetworkPolicy unchanged', () => {
    expect(objects.map(key).sort()).toEqual(base.map(key).sort());
    expect(find('NetworkPolicy', 'vmmsim-roles')).toEqual(base.find((o) => key(o) === 'NetworkPolicy/vmmsim-roles'));
  });

  it('runs every role under mutual TLS with the Secret\'s files, probed by TCP connects', () => {
    const names = new Set<string | undefined>();
    for (const role of ROLES) {
      const w = objects.find((x) => (x.kind === 'StatefulSet' || x.kind === 'Deployment') && x.metadata.name === role) as Kube;
      const c = container(w);
      const parsed = parseServeArgs((c.args ?? []).slice(1).map((a) => a.replace('$(POD_INDEX)', '0')));
      const tls = parsed?.tls;
      expect(tls, role).toBeDefined();
      checkFiles(w, [tls?.ca ?? '', tls?.cert ?? '', tls?.key ?? ''], 'vmmsim-tls');
      names.add(tls?.serverName);
      const grpcPort = c.ports?.find((p) => p.name === GRPC_PORT_NAME)?.containerPort;
      for (const probe of [c.readinessProbe, c.livenessProbe]) {
        expect(probe?.grpc, role).toBeUndefined();
        expect((probe?.tcpSocket as { port?: number } | undefined)?.port, role).toBe(grpcPort);
      }
    }
    // Peers are dialed by per-pod names: one name that every certificate carries.
    expect([...names]).toHaveLength(1);
    expect([...names][0]).toMatch(/^[a-z0-9-]+$/);
  });

  it('gives the controller Job a certificate of its own (vmmsim-tls-controller), at the same paths, and the same server name', () => {
    const job = find('Job', 'vmmsim-run');
    const { values } = parseArgs({ args: (container(job).args ?? []).slice(1), options: RUN_OPTIONS, allowPositionals: true, strict: true });
    const files = [values['tls-ca'], values['tls-cert'], values['tls-key']];
    expect(files.every((f) => typeof f === 'string')).toBe(true);
    // The roles' certificate grants every role's name; the controller's grants `controller`.
    checkFiles(job, files as string[], 'vmmsim-tls-controller');
    const role = container(find('Deployment', 'vfio')).args ?? [];
    expect(values['tls-server-name']).toBe(argAfter(role, '--tls-server-name'));
    expect(values['tls-ca']).toBe(argAfter(role, '--tls-ca'));
  });

  it('keeps the run token: every role and the Job need both a certificate and the token, and no role is --insecure', () => {
    for (const o of objects.filter((x) => ['StatefulSet', 'Deployment', 'Job'].includes(x.kind))) {
      expectRunToken(objects, o);
      expect(container(o).args, o.metadata.name).not.toContain('--insecure');
    }
    expect(objects.filter((o) => o.kind === 'Secret')).toEqual([]);
  });
});
