// Descriptors with readiness callbacks from libuv (uv_poll_t): no busy loop.
import { NativeError } from "../errors.js";
import { loadAddon, MAX_BATCH, type NativeAddon } from "./addon.js";
import { type PacketSlots } from "./batch.js";

export function defaultCount(slots: PacketSlots, first: number): number {
  return Math.max(0, Math.min(MAX_BATCH, slots.offsets.length - first));
}

/**
 * A descriptor owned by the addon with libuv readiness: level-triggered, so a handler that
 * leaves packets queued is simply called again on the next loop turn.
 */
export abstract class PolledDescriptor {
  readonly fd: number;
  #closed = false;
  #readable: (() => void) | null = null;
  #writable: (() => void) | null = null;
  #mask = 0;

  protected constructor(fd: number) {
    this.fd = fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  protected native(): NativeAddon {
    if (this.#closed) {
      throw new NativeError("EBADF", `descriptor ${this.fd} is closed`);
    }
    return loadAddon();
  }

  /**
   * Calls `handler` whenever the descriptor is readable (null stops). The handler should
   * drain with readBatch/recvBatch until it returns fewer packets than asked. A poll error
   * is reported as readability, so the next read throws the actual error.
   */
  onReadable(handler: (() => void) | null): void {
    this.#readable = handler;
    this.#rearm();
  }

  /**
   * Calls `handler` once, the next time the descriptor is writable: for resuming a batch
   * that a send or write left unfinished (EAGAIN). Writability is not watched otherwise,
   * since an idle socket is always writable and would wake the loop on every turn.
   */
  onceWritable(handler: (() => void) | null): void {
    this.#writable = handler;
    this.#rearm();
  }

  /** Whether a pending readiness watch keeps the process alive (default: it does). */
  ref(): void {
    this.native().watchRef(this.fd, true);
  }

  unref(): void {
    this.native().watchRef(this.fd, false);
  }

  /** Stops readiness callbacks and closes the descriptor. Calling it again does nothing. */
  close(): void {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    this.#readable = null;
    this.#writable = null;
    loadAddon().close(this.fd);
  }

  #rearm(): void {
    const lib = this.native();
    const mask = (this.#readable ? lib.READABLE : 0) | (this.#writable ? lib.WRITABLE : 0);
    if (mask === this.#mask) {
      return;
    }
    lib.watch(this.fd, mask, this.#dispatch);
    this.#mask = mask;
  }

  #dispatch = (events: number, status: number): void => {
    if (this.#closed) {
      return;
    }
    const lib = loadAddon();
    if ((events & lib.WRITABLE) !== 0 || status < 0) {
      const writable = this.#writable;
      if (writable) {
        this.#writable = null;
        this.#rearm();
        writable();
      }
    }
    if (!this.#closed && ((events & lib.READABLE) !== 0 || status < 0)) {
      this.#readable?.();
    }
  };
}
