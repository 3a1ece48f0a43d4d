// What the polling service asks of the browser: the time, visibility and connectivity.
// Injected, so the service can run on a fake clock and a scripted environment.

/**
 * Wall time, a monotonic clock in seconds, and timers. Every wait of the polling service
 * (backoff, Retry-After, request timeouts) goes through its clock, so tests run on fake time.
 */
export const systemClock = {
  now: () => new Date(),
  monotonic: () => performance.now() / 1000,
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle),
};

/** Visibility and connectivity of the page, and a way to hear when they change. */
export function browserEnvironment() {
  const hasDocument = typeof document !== "undefined";
  const hasWindow = typeof window !== "undefined";
  return {
    hidden: () => hasDocument && document.visibilityState === "hidden",
    online: () => typeof navigator === "undefined" || navigator.onLine !== false,
    listen(onVisible, onOnline, onOffline) {
      const visible = () => {
        if (document.visibilityState === "visible") onVisible();
      };
      if (hasDocument) document.addEventListener("visibilitychange", visible);
      if (hasWindow) {
        window.addEventListener("online", onOnline);
        window.addEventListener("offline", onOffline);
      }
      return () => {
        if (hasDocument) document.removeEventListener("visibilitychange", visible);
        if (hasWindow) {
          window.removeEventListener("online", onOnline);
          window.removeEventListener("offline", onOffline);
        }
      };
    },
  };
}
