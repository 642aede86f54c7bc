#!/usr/bin/env python3
"""pages.py TRACE MAPS: distinct pages a server touches between system calls.

TRACE is the output of valgrind --tool=lackey --trace-mem=yes, MAPS a copy
of /proc/PID/maps taken while it ran.  The trace is cut at every `syscall`
instruction of libc (found with objdump), and for the second half of the
intervals (the steady state) the script prints how many distinct 4 KiB
pages of code and of data each interval touched on average, by mapping.
Pages touched in fewer than a quarter of the intervals are summed as
"per connection".

Why pages: on a kernel with page-table isolation and no PCID, every system
call flushes the TLB, so each page an interval touches costs a page walk.
"""
import collections
import subprocess
import sys


def load_maps(path):
    regions, files = [], {}
    for line in open(path):
        f = line.split()
        lo, hi = (int(x, 16) for x in f[0].split('-'))
        name = f[5] if len(f) > 5 else None
        label = (name.rsplit('/', 1)[-1] if name else 'anon %dK' % ((hi - lo) >> 10)) + ' ' + f[1]
        regions.append((lo, hi, label))
        if name and name.startswith('/') and f[2] == '00000000' and name not in files:
            files[name] = lo
    return regions, files


def syscall_sites(maps_files):
    libc = next(p for p in maps_files if '/libc.so' in p)
    out = subprocess.run(['objdump', '-d', libc], capture_output=True, text=True, check=True).stdout
    base = maps_files[libc]
    return {base + int(l.split(':')[0], 16) for l in out.splitlines() if l.endswith('\tsyscall')
            or '\tsyscall ' in l}


def main():
    trace, maps = sys.argv[1], sys.argv[2]
    regions, files = load_maps(maps)
    sites = syscall_sites(files)
    intervals, code, data = [], set(), set()
    for line in open(trace):
        if line.startswith('I  '):
            a = int(line[3:].split(',')[0], 16)
            code.add(a >> 12)
            if a in sites:
                intervals.append((code, data))
                code, data = set(), set()
        elif line[:2] in (' L', ' S', ' M'):
            data.add(int(line[3:].split(',')[0], 16) >> 12)
    steady = intervals[len(intervals) // 2:]
    if not steady:
        sys.exit('pages.py: no system calls in the trace')
    n = len(steady)
    seen = collections.Counter()
    for c, d in steady:
        seen.update(('code', p) for p in c)
        seen.update(('data', p) for p in d)

    def region(page):
        a = page << 12
        return next((label for lo, hi, label in regions if lo <= a < hi), '?')

    by = collections.Counter()
    for (kind, page), times in seen.items():
        share = times / n
        label = region(page) if share >= 0.25 else 'per connection: ' + region(page)
        by[(kind, label)] += share
    print('%d intervals (steady half of %d)' % (n, len(intervals)))
    for kind in ('code', 'data'):
        total = sum(v for (k, _), v in by.items() if k == kind)
        print('%s pages per interval: %.2f' % (kind, total))
        for (k, label), v in by.most_common():
            if k == kind and v >= 0.05:
                print('    %-48s %.2f' % (label, v))
    print('all pages per interval: %.2f' % sum(by.values()))


main()
