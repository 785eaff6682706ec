declare module 'aedes-persistence-level' {
  /** Returns an Aedes persistence backed by the given abstract-level database (untyped upstream). */
  export default function aedesPersistenceLevel(db: unknown): { destroy(callback?: () => void): unknown };
}
