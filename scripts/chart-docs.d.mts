// Types for scripts/chart-docs.mjs (plain JavaScript, so that `npm run docs` runs it directly).
export declare const VALUES_TABLE_START: string;
export declare const VALUES_TABLE_END: string;
export declare const VALUES_FILE: URL;
export declare function parseValues(text: string): Record<string, unknown>;
export declare function documentedValues(text: string): { path: string[]; description: string }[];
export declare function leafPaths(values: unknown, prefix?: string[]): string[][];
export declare function undocumentedValues(text: string): string[];
export declare function renderValuesTable(text?: string): string;
