/**
 * The guest's trace reader is the shared one (services/formats/iommu-trace.ts): the controller reads
 * a trace too, to refuse one with nothing to replay before any process starts.
 */
export { TraceParser, parseTrace, type TraceEvent, type TraceParse } from '../formats/iommu-trace.js';
