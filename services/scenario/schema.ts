/**
 * The one schema of a scenario: every key, its type, its range, its default and what it means.
 * `vmmsim run` and `vmmsim compare` take a YAML file of these keys, and `--set key=value` takes the
 * same dotted keys. This file is where the defaults are documented.
 */
import { MODEL, MODELS, type ModelName } from '../designs/names.js';

// The designs are named in services/designs (names.ts), where each has its folder.
export { MODELS, type ModelName };


export const WORKLOADS = ['dma-map-benchmark', 'packet-stream', 'block', 'sva-unmap-storm', 'trace-replay'] as const;
/**
 * Workloads that model the I/O around the map and unmap (per-I/O CPU work, the device, the link) and
 * so report application throughput (results.json runs[].application): packets or requests per second.
 */
export const APPLICATION_WORKLOADS: readonly (typeof WORKLOADS)[number][] = ['packet-stream', 'block'];
/** What each application workload counts as its I/O (runs[].application.unit). */
export const APPLICATION_UNITS: Readonly<Record<string, string>> = { 'packet-stream': 'packets', block: 'requests' };
/**
 * workload.queueDepth 0 (the default): each application workload's own depth. packet-stream 64:
 * the NAPI weight, the packets a driver handles per poll (NAPI_POLL_WEIGHT, include/linux/netdevice.h);
 * block 32: fio's usual random-read depth (iodepth=32).
 */
export const DEFAULT_QUEUE_DEPTH: Readonly<Record<string, number>> = { 'packet-stream': 64, block: 32 };
/** Workloads that run open loop at workload.rate; the others refuse rate > 0 as not supported yet. */
export const RATE_WORKLOADS: readonly (typeof WORKLOADS)[number][] = ['dma-map-benchmark', 'packet-stream', 'block'];
/** How open-loop arrivals are spaced (workload.arrivals): evenly, or as a Poisson process. */
export const ARRIVAL_PROCESSES = ['constant', 'poisson'] as const;
export type ArrivalProcess = (typeof ARRIVAL_PROCESSES)[number];
/** vmm.hwptInvalidate: how the VMM hands the guest's invalidations to iommufd. */
export const HWPT_INVALIDATE_MODES = ['per-command', 'per-batch', 'queue'] as const;
/** workload.migration.fallback: where the vCPUs a migration left without a VCMDQ send their invalidations. */
export const MIGRATION_FALLBACKS = ['vmm', 'kvm'] as const;
export const DMA_MODES = ['strict', 'lazy', 'static', 'bounce', 'swiotlb'] as const;
/** guest.flushQueue: auto is the design's driver's choice (services/guest/flush-queue.ts FlushQueue.kindFor). */
export const FLUSH_QUEUES = ['auto', 'per-cpu', 'single'] as const;

/** The longest name a scenario may have: it names results folders and report titles. */
export const MAX_NAME_LENGTH = 128;
/** The longest path a scenario key takes (Linux's PATH_MAX). */
export const MAX_PATH_LENGTH = 4096;

/** The length of the longest of `values`: the maxLength of a key that takes one of them. */
function longest(values: readonly string[]): number {
  return Math.max(...values.map((v) => v.length));
}

export interface StringField {
  type: 'string';
  default: string;
  doc: string;
  /**
   * The most characters a value may have, checked before anything else is done with it (a 20 MiB
   * name once passed validation and reached every process). With `enum`, its longest value.
   */
  maxLength: number;
  /** Allowed values; absent means any non-empty string. */
  enum?: readonly string[];
  /** Values of `enum` this build implements; the rest are refused with "not supported yet". */
  supported?: readonly string[];
  /** Old values, no longer in `enum`, refused with what replaced them (E_SCENARIO_FIELD). */
  replaced?: Readonly<Record<string, string>>;
  /** What of this key's values no upstream Linux or QEMU code runs (exploration), with the source that says so. */
  upstream?: string;
}

export interface NumberField {
  type: 'integer' | 'number';
  default: number;
  doc: string;
  min: number;
  max: number;
  /** Largest value this build implements (below `max`); above it is "not supported yet". */
  supportedMax?: number;
}

/** A switch: `true` or `false` in YAML, `--set key=true|false`. */
export interface BooleanField {
  type: 'boolean';
  default: boolean;
  doc: string;
}

export interface ObjectField {
  type: 'object';
  doc: string;
  fields: Record<string, Field>;
}

/** A key that takes one value (not a mapping of keys). */
export type LeafField = StringField | NumberField | BooleanField;
export type Field = LeafField | ObjectField;

/** A key the schema knows but this build does not implement: setting it is refused, never ignored. */
export interface PlannedField {
  type: 'planned';
  doc: string;
  why: string;
}

export const SCENARIO_SCHEMA: ObjectField = {
  type: 'object',
  doc: 'a vmmsim scenario',
  fields: {
    name: { type: 'string', default: 'scenario', maxLength: MAX_NAME_LENGTH, doc: 'name used in results and output folders' },
    seed: { type: 'integer', default: 1, min: 0, max: 2 ** 32 - 1, doc: 'seed of every random choice; same seed, same modeled results' },
    model: { type: 'string', default: MODEL.nestedSmmuv3, maxLength: longest(MODELS), enum: MODELS, doc: 'vIOMMU architecture (paths.md)' },
    dma: {
      type: 'string', default: 'strict', maxLength: longest(DMA_MODES), enum: DMA_MODES, supported: DMA_MODES,
      doc: 'guest DMA API mode: strict (invalidate before unmap returns), lazy (a flush queue per domain, see guest.flushQueue), static (map once), bounce (the IOMMU-backed reusable bounce pool: a driver-level design, copy through a pool mapped once), swiotlb (dma-iommu\'s bounce path for untrusted devices: each buffer, taken to start 64 bytes into its page, is copied into a swiotlb slot that is mapped and unmapped, with its invalidation, on every I/O; designs whose guest DMA API is dma-iommu only, not none or sPAPR)',
    },
    profile: { type: 'string', default: 'arm64-kunpeng920', maxLength: MAX_PATH_LENGTH, doc: 'cost profile: a name in profiles/ or a path to a profile YAML file' },
    topology: {
      type: 'object',
      doc: 'hosts, SMMUs, devices and VMs',
      fields: {
        hosts: { type: 'integer', default: 1, min: 1, max: 64, supportedMax: 1, doc: 'hosts (one KVM and one VFIO each)' },
        psmmus: { type: 'integer', default: 1, min: 1, max: 64, doc: 'physical SMMUs per host (Grace has 5)' },
        vms: { type: 'integer', default: 1, min: 1, max: 64, doc: 'VMs (one guest and one qemu process each); the assigned devices are dealt to them in turn, so each needs at least one: psmmus x devicesPerPsmmu >= vms' },
        devicesPerPsmmu: { type: 'integer', default: 1, min: 1, max: 256, doc: 'assigned devices behind each physical SMMU' },
        vsmmu: { type: 'string', default: 'single', maxLength: longest(['single', 'per-psmmu']), enum: ['single', 'per-psmmu'], doc: 'one vSMMU per VM in front of all its pSMMUs, or one vSMMU per pSMMU', upstream: 'per-psmmu is what upstream runs; single in front of more than one pSMMU (a VM with devices behind several, under a nested design) is exploration: QEMU\'s accelerated vSMMU holds one vIOMMU object for one pSMMU, and iommufd refuses a vDEVICE behind another pSMMU (iommufd_vdevice_alloc_ioctl)' },
        dispatch: { type: 'string', default: 'broadcast', maxLength: longest(['broadcast', 'lookup']), enum: ['broadcast', 'lookup'], doc: 'how a single vSMMU routes stage-1 invalidations to the pSMMUs of its VM: broadcast (each to every one) or lookup (by ASID, through a table the VMM keeps from the guest\'s context descriptors, to the pSMMUs whose devices use it). Matters only when a single vSMMU (topology.vsmmu single) fronts several pSMMUs of one VM (topology.psmmus > 1) under a nested design', upstream: 'exploration either way: it applies to a single vSMMU in front of several pSMMUs, which no upstream VMM runs (see topology.vsmmu)' },
        vmid: { type: 'string', default: 'per-s2-parent', maxLength: longest(['per-s2-parent', 'per-vsmmu']), enum: ['per-s2-parent', 'per-vsmmu'], doc: 'VMID policy of nested designs: per-s2-parent (one VMID per VM, shared by its vSMMUs) or per-vsmmu (one per vSMMU instance: with vsmmu per-psmmu, one per pSMMU the VM uses)', upstream: 'per-s2-parent with a VM\'s devices behind several pSMMUs (one VMID and stage-2 table shared across pSMMUs) needs code that is not upstream: in Linux v6.18 a stage-2 domain and its VMID belong to one SMMU (arm_vsmmu_init); upstream is per-vsmmu with vsmmu per-psmmu' },
        vcmdqsPerVsmmu: { type: 'integer', default: 2, min: 0, max: 128, doc: 'VCMDQs each vSMMU gets under nested-smmuv3-vcmdq (QEMU exposes 2; a CMDQV has at most 128). Matters only under a design with VCMDQs' },
        emulatedDevices: { type: 'integer', default: 0, min: 0, max: 31, doc: 'nested designs: devices per VM that the VMM emulates itself, beside the assigned ones, behind a separate emulated vSMMU instance (its own MMIO base, command queue and root bus: one bus of device numbers 1..31); their DMA is translated by the VMM and their invalidations stop there (exit, user); 0 = none' },
      },
    },
    device: {
      type: 'object',
      doc: 'the DMA of the assigned devices while the workload runs',
      fields: {
        dmaRate: { type: 'number', default: 1000, min: 0, max: 1e6, doc: 'translations per second per device, into the buffers its driver posted (0: idle)' },
        ringBuffers: { type: 'integer', default: 16, min: 0, max: 64, doc: 'buffers each device keeps mapped for the whole run (its driver\'s receive ring), where most of its DMA goes' },
        lingerMs: { type: 'number', default: 0, min: 0, max: 60_000, doc: 'a buggy or hostile device keeps touching a buffer this long after its unmap returned (0: well-behaved)' },
        lingerShare: { type: 'number', default: 0.2, min: 0, max: 1, doc: 'share of accesses that go to such a buffer while one lingers' },
        iotlbEntries: { type: 'integer', default: 2048, min: 8, max: 1 << 20, doc: 'IOTLB entries of each physical SMMU' },
        ats: { type: 'boolean', default: false, doc: 'PCIe ATS: each assigned device keeps a small translation cache (ATC) its DMA hits without the SMMU, and every unmap also sends ATC_INV for it after the TLBI and its sync, with a CMD_SYNC of its own that completes when the device answers (a PCIe round trip, smmu.atc_inv); designs whose IOMMU driver is arm-smmu-v3 only (QEMU offers ATS on its accelerated vSMMU alone)' },
        nic: {
          type: 'object',
          doc: 'the NIC each assigned device is under workload.kind packet-stream: a resource of the queueing replay per device, beside its link (one per direction)',
          fields: {
            mpps: { type: 'number', default: 115, min: 0.001, max: 1e4, doc: 'packets per second its pipeline serves, in millions (a single server of 1/mpps us per packet). Default: ConnectX-5 Ex, 115 Mpps (PCIe-bound, XDP_DROP; Hoiland-Jorgensen et al., "The eXpress Data Path", CoNEXT 2018); confidence C' },
            lineGbps: { type: 'number', default: 100, min: 0.001, max: 1e4, doc: 'its port\'s line rate in Gbit/s, each direction (full duplex): a packet holds the link for (packetBytes + 38 bytes of Ethernet framing) x 8 / lineGbps ns. Default: 100 (ConnectX-5 Ex, 100GbE: the NIC of mpps); confidence C' },
            pagePool: { type: 'boolean', default: false, doc: 'the driver takes its RX buffers from a page_pool that keeps them DMA-mapped (PP_FLAG_DMA_MAP: page_pool_dma_map at allocation, as mlx5, ice and other drivers do): each RX buffer is mapped once at setup (the operation page-pool-setup, apart from the steady state) and every received packet recycles it with no map or unmap; TX buffers still map per packet. Every buffer is taken to recycle (the best case: a page the stack keeps too long is released and a new one mapped). false: the driver maps every RX buffer per packet. Matters only with workload.kind packet-stream and dma strict or lazy' },
          },
        },
        nvme: {
          type: 'object',
          doc: 'the NVMe drive each assigned device is under workload.kind block: a resource of the queueing replay per device with parallelism servers, beside its PCIe link',
          fields: {
            serviceUs: { type: 'number', default: 78, min: 0.001, max: 1e6, doc: 'how long the drive takes to serve one request, in us. Default: 78, a datacenter NAND drive\'s 4 KiB random read at queue depth 1 (Intel P3700 77.9 us, Micron 9100 107.7 us, through the kernel: AnandTech, Intel Optane P4800X review, 2017); confidence S' },
            parallelism: { type: 'integer', default: 78, min: 1, max: 65536, doc: 'requests it serves at once (its channels and dies): a multi-server resource of the replay. Default: 78 = 1 M IOPS (Intel D7-P5500 datasheet, 4 KiB random read) x 78 us (serviceUs), by Little\'s law; confidence S (derived)' },
            linkGBps: { type: 'number', default: 7, min: 0.001, max: 1e4, doc: 'its link\'s bandwidth in GB/s: a request holds the link for granulePages x 4096 / linkGBps ns. Default: 7 (D7-P5500 datasheet, 7000 MB/s sequential read, PCIe 4.0 x4); confidence C' },
          },
        },
      },
    },
    guest: {
      type: 'object',
      doc: 'how the guest kernel drives its IOMMU',
      fields: {
        flushQueue: {
          type: 'string', default: 'auto', maxLength: longest(FLUSH_QUEUES), enum: FLUSH_QUEUES,
          doc: 'lazy mode\'s flush queue per domain: auto (what Linux picks for the design\'s IOMMU driver, iommu_dma_init_options: single under virtio-iommu and vhost-iommu, whose driver sets shadow_on_flush; per-cpu otherwise), per-cpu (a ring of 256 per CPU, full at 255, and a 10 ms timer per domain) or single (one ring of 32768 and a 1000 ms timer). Matters only with dma lazy',
        },
        ddw: {
          type: 'boolean', default: false,
          doc: 'sPAPR: the guest gives its 64-bit-capable devices a dynamic DMA window over all its RAM at boot (Linux\'s enable_ddw direct mapping: H_PUT_TCE_INDIRECT of 512 16 MiB TCEs at a time, reported once as the operation ddw-boot, apart from the steady state), and then maps every buffer with no hypercall (its DMA address is its RAM address plus the window\'s offset); sPAPR designs only',
        },
        tceHcalls: { type: 'string', default: 'indirect', maxLength: longest(['indirect', 'per-entry']), enum: ['indirect', 'per-entry'], doc: 'sPAPR: indirect (H_PUT_TCE_INDIRECT / H_STUFF_TCE, up to 512 TCEs per hypercall, as Linux with multi-TCE) or per-entry (one H_PUT_TCE per page). Matters only under an sPAPR design with workload.granulePages > 1 (with one page the two make the same one hypercall)' },
      },
    },
    smmu: {
      type: 'object',
      doc: 'what the SMMUs offer',
      fields: {
        ril: { type: 'boolean', default: true, doc: 'range invalidation (IDR3.RIL) on the physical SMMUs and the accelerated vSMMUs (QEMU\'s ril property, which must match the host; QEMU\'s emulated vSMMU always has it and refuses ril=off): without it a multi-page unmap is one TLBI per page, sent 64 to a batch with one CMD_SYNC after the last (arm_smmu_cmdq_batch_add), and QEMU forwards each as its own IOMMU_HWPT_INVALIDATE. Matters only under an SMMUv3 design when an invalidation covers more than one page (workload.granulePages > 1, or virtio-mem\'s stage-2 unmaps)' },
      },
    },
    vmm: {
      type: 'object',
      doc: 'how the VMM forwards guest work to the host kernel',
      fields: {
        hwptInvalidate: { type: 'string', default: 'per-command', maxLength: longest(HWPT_INVALIDATE_MODES), enum: HWPT_INVALIDATE_MODES, doc: 'nested SMMUv3 (the trapped path through the VMM): one IOMMU_HWPT_INVALIDATE per guest command (QEMU today), one per guest batch (the invalidations queued before a CMD_SYNC, as an entry array), or queue (a proposal, never merged: [PATCH v2 17/17] arm_smmu_cache_invalidate_user, May 2023: the one ioctl hands the kernel the guest queue\'s location, CONS and PROD, and the kernel reads the entries from guest memory itself and issues them as one list with one CMD_SYNC; needs one vIOMMU per vSMMU: topology.vsmmu per-psmmu or a single pSMMU). Matters only when the VMM forwards invalidations (nested-smmuv3, nested-smmuv3-vcmdq\'s trapped path, the CFGIs nested-smmuv3-kvm hands on) and, for per-batch and queue, only when a guest batch holds more than one command' },
      },
    },
    workload: {
      type: 'object',
      doc: 'what the guest runs',
      fields: {
        kind: {
          type: 'string', default: 'dma-map-benchmark', maxLength: longest([...WORKLOADS, 'static']), enum: WORKLOADS,
          replaced: { static: 'static mappings are one key now, dma=static: set dma to static with workload.kind packet-stream or block (a poll-mode driver posting premapped buffers; the initial maps are reported apart as static-setup)' },
          doc: 'workload generator: dma-map-benchmark (Linux\'s tool: map, I/O, unmap, repeat: a bare DMA-API benchmark, no application around it), packet-stream (netperf-like: a NIC queue pair per thread, TX and RX packets in turn, each with its network-stack work, its map and unmap, the NIC and the link: reports packets per second), block (fio-like: batches of queueDepth requests, each with its block-layer work, its map and unmap, the NVMe drive and its link: reports requests per second), sva-unmap-storm (SVA munmaps: a stage-1 invalidation by ASID and VA each), trace-replay (a Linux ftrace of iommu map/unmap events)',
        },
        trace: { type: 'string', default: '', maxLength: MAX_PATH_LENGTH, doc: 'trace-replay: a Linux ftrace file of iommu map/unmap events (trace-cmd report, /sys/kernel/tracing/trace or perf script text)' },
        timeScale: { type: 'number', default: 1, min: 0, max: 1e6, doc: 'trace-replay: factor on the trace\'s inter-arrival times (0: replay as fast as possible)' },
        threads: { type: 'integer', default: 1, min: 1, max: 256, doc: 'guest threads (vCPUs) issuing operations concurrently' },
        granulePages: { type: 'integer', default: 1, min: 1, max: 512, doc: '4 KiB pages per map/unmap (a packet buffer, a block request, a static buffer, a munmap)' },
        ops: { type: 'integer', default: 2000, min: 0, max: 1e9, doc: 'in all, shared evenly by the threads: map+unmap iterations (dma-map-benchmark), packets (packet-stream), requests (block), I/Os (static), munmaps (sva-unmap-storm); 0 = until durationSec' },
        dwellUs: { type: 'number', default: 0, min: 0, max: 10_000_000, doc: 'how long the device works on what was posted (a buffer, a packet, a batch of requests) before the driver reaps it (and unmaps it); not sva-unmap-storm' },
        gapUs: { type: 'number', default: 0, min: 0, max: 10_000_000, doc: 'think time of each thread after each iteration, packet, batch or munmap; closed loop only (rate 0)' },
        queueDepth: { type: 'integer', default: 0, min: 0, max: 256, doc: 'packet-stream and block: I/Os each thread (vCPU) keeps in flight (the lanes of the queueing replay, sharing the vCPU); block maps, serves and unmaps them as one batch (fio iodepth with iodepth_batch). 0: the workload\'s own, packet-stream 64 (NAPI_POLL_WEIGHT, include/linux/netdevice.h), block 32 (fio iodepth=32)' },
        packetBytes: { type: 'integer', default: 1500, min: 64, max: 65536, doc: 'packet-stream: bytes of each packet, up to granulePages x 4096 (its buffer): how long it holds the link. The stack steps (net.tx_packet, net.rx_packet) are priced per packet of the MTU whatever this is, so a larger value is not a TSO/GRO segment (whose copy grows with its bytes and whose RX side still fills one buffer per MTU packet). Default: 1500, the Ethernet MTU (IEEE 802.3); confidence C' },
        durationSec: { type: 'number', default: 0, min: 0, max: 86400, doc: 'stop after this many seconds; 0 = no time limit' },
        rate: { type: 'number', default: 0, min: 0, max: 1e9, doc: `open loop: iterations (dma-map-benchmark), packets (packet-stream) or requests (block) per second over all threads, arriving on their own (a map at its arrival time, latency counted from it); 0 = closed loop. Only ${RATE_WORKLOADS.join(', ')} run open loop yet` },
        arrivals: { type: 'string', default: 'constant', maxLength: longest(ARRIVAL_PROCESSES), enum: ARRIVAL_PROCESSES, doc: 'open loop (rate > 0): constant (evenly spaced, the threads take them in turn) or poisson (each thread an independent Poisson stream of rate/threads from the seed: Poisson at rate in all)' },
        migration: {
          type: 'object',
          doc: 'a live migration of VM 0 during the run: its vCPUs pause, its VMM re-creates the VM\'s HW queues on the destination host, they resume; operations are reported as NAME@before and NAME@after',
          fields: {
            atOp: { type: 'integer', default: 0, min: 0, max: 1e9, doc: 'VM 0 migrates once each of its threads has run its share of this many operations (each map and each unmap is one, shared among the threads as ops is); 0 = no migration' },
            destVcmdqs: { type: 'integer', default: 128, min: 0, max: 128, doc: 'VCMDQs the destination host has free for each of the VM\'s vSMMUs (nested-smmuv3-vcmdq): the VMM re-creates at most this many (the modeled cost of re-creating them: workloadCounters.hwQueueRecreateNs), and the vCPUs whose queue is missing fall back to the trapped path (workload.migration.fallback)' },
            fallback: { type: 'string', default: 'vmm', maxLength: longest(MIGRATION_FALLBACKS), enum: MIGRATION_FALLBACKS, doc: 'nested-smmuv3-vcmdq: where the invalidations of vCPUs whose VCMDQ is gone (and every command a VCMDQ does not take) go: vmm (the trapped path through the VMM and IOMMU_HWPT_INVALIDATE, as today) or kvm (nested-smmuv3-kvm\'s in-kernel short path, a proposal with no posted patch). Matters only under nested-smmuv3-vcmdq with a migration to fewer free VCMDQs than the vSMMU exposes (destVcmdqs < topology.vcmdqsPerVsmmu) or with commands the VCMDQs refuse' },
          },
        },
        virtioMem: {
          type: 'object',
          doc: 'memory resizes through virtio-mem during the run: the guest unplugs 2 MiB blocks of its virtio-mem region and later plugs them back; an unplug discards the RAM and unmaps it from the VM\'s I/O address space (IOMMU_IOAS_UNMAP), a host-side stage-2 change invalidated on every pSMMU that walks the VM\'s stage 2; reported as operations mem-unplug and mem-plug and in invalidations.hostStage2',
          fields: {
            everyOps: { type: 'integer', default: 0, min: 0, max: 1e9, doc: 'every this many operations of thread 0 of each VM, one resize: unplug, and the next time plug the same blocks back; 0 = none' },
            blocks: { type: 'integer', default: 1, min: 1, max: 512, doc: '2 MiB blocks per request (the region holds 512)' },
          },
        },
      },
    },
  },
};

export interface Scenario {
  name: string;
  seed: number;
  model: ModelName;
  dma: (typeof DMA_MODES)[number];
  profile: string;
  topology: {
    hosts: number;
    psmmus: number;
    vms: number;
    devicesPerPsmmu: number;
    vsmmu: 'single' | 'per-psmmu';
    dispatch: 'broadcast' | 'lookup';
    vmid: 'per-s2-parent' | 'per-vsmmu';
    vcmdqsPerVsmmu: number;
    emulatedDevices: number;
  };
  device: {
    dmaRate: number;
    ringBuffers: number;
    lingerMs: number;
    lingerShare: number;
    iotlbEntries: number;
    ats: boolean;
    nic: { mpps: number; lineGbps: number; pagePool: boolean };
    nvme: { serviceUs: number; parallelism: number; linkGBps: number };
  };
  guest: {
    flushQueue: (typeof FLUSH_QUEUES)[number];
    tceHcalls: 'indirect' | 'per-entry';
    ddw: boolean;
  };
  smmu: {
    ril: boolean;
  };
  vmm: {
    hwptInvalidate: (typeof HWPT_INVALIDATE_MODES)[number];
  };
  workload: {
    kind: (typeof WORKLOADS)[number];
    trace: string;
    timeScale: number;
    threads: number;
    granulePages: number;
    ops: number;
    dwellUs: number;
    gapUs: number;
    durationSec: number;
    rate: number;
    arrivals: ArrivalProcess;
    queueDepth: number;
    packetBytes: number;
    migration: {
      atOp: number;
      destVcmdqs: number;
      fallback: (typeof MIGRATION_FALLBACKS)[number];
    };
    virtioMem: {
      everyOps: number;
      blocks: number;
    };
  };
}

/** Every leaf key as a dotted path with its spec, in schema order. */
export function leafFields(obj: ObjectField = SCENARIO_SCHEMA, prefix = ''): [string, LeafField][] {
  const out: [string, LeafField][] = [];
  for (const [k, f] of Object.entries(obj.fields)) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (f.type === 'object') out.push(...leafFields(f, path));
    else out.push([path, f]);
  }
  return out;
}

/**
 * The documentation of every key, for `vmmsim scenario-keys` and the README. `upstream` adds, by
 * key, what of its values is not upstream (the model key's designs, which live outside this file).
 */
export function describeSchema(upstream: Readonly<Record<string, string>> = {}): string {
  return leafFields()
    .map(([path, f]) => {
      const note = upstream[path] ?? (f.type === 'string' ? f.upstream : undefined);
      const allowed =
        f.type === 'string'
          ? f.enum
            ? (f.supported ?? f.enum).join('|') + (f.supported && f.supported.length < f.enum.length ? ` (planned: ${f.enum.filter((v) => !f.supported?.includes(v)).join(', ')})` : '')
            : `string of at most ${f.maxLength} characters`
          : f.type === 'boolean'
            ? 'true|false'
            : `${f.type} ${f.min}..${f.supportedMax ?? f.max}`;
      return `${path.padEnd(26)} ${String(f.default).padEnd(18)} ${allowed}\n${''.padEnd(27)}${f.doc}${note ? `\n${''.padEnd(27)}not upstream: ${note}` : ''}`;
    })
    .join('\n');
}
