export * from './teams';
export * from './projects';
export * from './cms';
export * from './jobs';
export * from './staff';
export * from './imports';
export * from './job-events';
export * from './dashboard';
