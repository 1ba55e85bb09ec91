// The one place the version is written down (package.json's, checked by a test).
export const VERSION = "0.1.0";
