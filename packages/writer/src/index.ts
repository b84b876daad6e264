export * from './writer.js';
export * from './carry.js';
export * from './pg-sink.js';
export { TableWriter, loadCsvFiles, readCsvFile, connectBarsTable, type TableBar, type LoadCounts } from './bars-table.js';
