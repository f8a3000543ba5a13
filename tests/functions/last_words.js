'use strict';
// Says something, then dies in the way the path names.
module.exports = async ({ request }) => {
  console.log(`last words before ${request.path}`);
  if (request.path === '/oom') {
    const hog = [];
    for (;;) hog.push(Buffer.alloc(8 << 20, 1));
  }
  if (request.path === '/kill') process.kill(process.pid, 'SIGKILL');
  if (request.path === '/timeout') await new Promise((resolve) => setTimeout(resolve, 60000));
  if (request.path === '/log42') {
    const line = 'z'.repeat(999);
    for (let i = 0; i < 42 * 1000; i++) console.log(line);
    return { body: 'logged' };
  }
  if (request.path === '/leftover') {
    // A timer that outlives its call and prints while another runs.
    setTimeout(() => console.log('leftover line'), 300);
    return { body: 'started' };
  }
  if (request.path === '/thread') {
    // A timer the call waits for: the call's own output.
    await new Promise((resolve) => setTimeout(() => { console.log('from a thread'); resolve(); }, 10));
    return { body: 'joined' };
  }
  if (request.path === '/slow') {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    return { body: 'slow' };
  }
  return { body: 'fine' };
};
