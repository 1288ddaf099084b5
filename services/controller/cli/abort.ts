/**
 * What ends a command's runs early: a process of a tree that exits, SIGINT or SIGTERM. A leaf of
 * the CLI's modules: the process tree (tree.ts), --connect (../connect.ts) and the saturation
 * search (search.ts) all race their steps against it.
 */
import { VmmsimError } from '../../runtime/errors.js';

/**
 * Each step a command awaits races it. Its signal handlers stay for the whole command, across a
 * sweep's trees.
 */
export class RunAbort {
  private failure: VmmsimError | undefined;
  private readonly aborted: Promise<never>;
  private reject: (err: VmmsimError) => void = () => undefined;
  private readonly onSignal = (sig: NodeJS.Signals): void => this.abort(new VmmsimError('E_INTERRUPTED', `interrupted by ${sig}`));

  constructor() {
    this.aborted = new Promise<never>((_, reject) => {
      this.reject = reject;
    });
    this.aborted.catch(() => undefined);
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  readonly abort = (err: VmmsimError): void => {
    this.failure ??= err;
    this.reject(err);
  };

  throwIfAborted(): void {
    if (this.failure) throw this.failure;
  }

  race<T>(step: Promise<T>): Promise<T> {
    // A step left behind by an abort may fail later: that is no unhandled rejection.
    step.catch(() => undefined);
    return Promise.race([step, this.aborted]);
  }

  dispose(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}
