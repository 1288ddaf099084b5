/**
 * The in-kernel handlers of each architecture register themselves here (registerKvmDevice), so
 * KvmRole needs no list of models.
 */
export {};
