// Link notifications from the kernel (rtnetlink, RTMGRP_LINK): how the daemon learns that
// `ip link set NAME mtu N` changed its interface, as wireguard-go learns it, with no polling.
import { callNative } from "./addon.js";
import { PolledDescriptor } from "./poll.js";

/**
 * Readable whenever a link of the process's network namespace changes. The notifications
 * are only counted, not parsed: the owner re-reads what it follows (one ioctl).
 */
export class LinkEvents extends PolledDescriptor {
  private constructor(fd: number) {
    super(fd);
  }

  static open(): LinkEvents {
    return new LinkEvents(callNative((addon) => addon.linkEventsOpen()));
  }

  /** Empties the queue; returns how many notifications it held (lost ones count as one). */
  drain(): number {
    const addon = this.native();
    return callNative(() => addon.linkEventsDrain(this.fd));
  }
}
