import { escapeControls } from './text-escape.js';

/** The broker's one logging seam: the CLI prints lines, tests and embedders pass their own or none. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

export function consoleLogger(): Logger {
  // Messages quote what clients chose with JSON.stringify, which leaves DEL, C1 and invisible
  // format characters as they are: escaped here, one line stays one line on the terminal.
  const line = (level: string, message: string) => `${new Date().toISOString()} ${level} ${escapeControls(message)}`;
  return {
    info: (message) => console.log(line('info', message)),
    warn: (message) => console.warn(line('warn', message)),
    error: (message) => console.error(line('error', message)),
  };
}
