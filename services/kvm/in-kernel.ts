/**
 * The in-kernel handlers of each architecture register themselves here (registerKvmDevice), so
 * KvmRole needs no list of models.
 */
import './spapr-tce-kvm.js';
import './vhost-iommu.js';
