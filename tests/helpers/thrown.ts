import { VmmsimError } from '../../services/runtime/errors.js';

/** The VmmsimError `fn` throws; anything else thrown, or nothing, fails the test. */
export function thrown(fn: () => unknown): VmmsimError {
  try {
    fn();
  } catch (err) {
    if (err instanceof VmmsimError) return err;
    throw err;
  }
  throw new Error('no error');
}
