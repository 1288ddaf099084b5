/** The CMDQV and its VCMDQs: the public surface of worker-pool/. */
export { Cmdqv, DEFAULT_SID_PAIRS, MAX_SID_PAIRS, MAX_VCMDQS, MAX_VINTFS, type CmdqvConfig, type SidPair, type VintfInfo } from './cmdqv.js';
export { AtcInvalidations } from './atc-invalidations.js';
export { ConfigInvalidations } from './config-invalidations.js';
export { VcmdqError, VcmdqErrorCodes, type Result, type VcmdqErrorCode } from './errors.js';
export {
  Vcmdq, VcmdqPool, proportionateWorkers, type SubmitResult, type VEvent, type VcmdqPoolOptions, type VcmdqRegisters, type VcmdqStats, type WorkerStats,
} from './pool.js';
export { Iotlb, type IotlbEntry, type IotlbStats } from './iotlb.js';
export { MAX_LOG2, MIN_LOG2, RingProducer, createRing, ringBytes, type MsiWrite, type RingView } from './ring.js';
