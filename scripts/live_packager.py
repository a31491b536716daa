#!/usr/bin/env python3
"""LL-HLS packager over ffmpeg's fragmented MP4 (issue 19, "Live and low latency").

ffmpeg 5's hls muxer writes no partial segments, so ffmpeg writes one fragmented MP4 stream to stdin (a moof+mdat
fragment every part duration, a keyframe every segment duration) and this script only *cuts* it at box boundaries:
`init.mp4` is ftyp+moov, each fragment is a part (`seg<N>.<P>.m4s`), each segment is its parts concatenated
(`seg<N>.m4s`), and the playlist (`live.m3u8`) lists the last segments with `EXT-X-PART` for the recent ones,
`EXT-X-PRELOAD-HINT` for the next part and `EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES`. No sample is rewritten:
this is not a muxer. Every file is written beside its name and renamed into place, so a reader never sees half of
one. Old segments and parts past the window are deleted.

Usage: ffmpeg ... -f mp4 -movflags empty_moov+default_base_moof+frag_keyframe -frag_duration 333333 pipe:1 |
       live_packager.py OUT_DIR [--segment 2] [--part 0.3334] [--window 6]
"""

import argparse
import os
import struct
import sys
import time


def boxes(data, start=0, end=None):
    """(type, payload start, box end) of each box in data[start:end]."""
    end = len(data) if end is None else end
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[i + 8 : i + 16])[0]
            header = 16
        elif size == 0:
            size = end - i
        if size < header:
            return
        yield kind.decode("latin-1"), i + header, i + size
        i += size


def child(data, start, end, kind):
    for k, s, e in boxes(data, start, end):
        if k == kind:
            return s, e
    return None


def tracks(moov):
    """track id -> (handler, timescale), from the init segment's moov payload."""
    out = {}
    for kind, s, e in boxes(moov):
        if kind != "trak":
            continue
        tkhd = child(moov, s, e, "tkhd")
        mdia = child(moov, s, e, "mdia")
        if not tkhd or not mdia:
            continue
        version = moov[tkhd[0]]
        track_id = struct.unpack(">I", moov[tkhd[0] + (20 if version == 1 else 12) :][:4])[0]
        mdhd = child(moov, mdia[0], mdia[1], "mdhd")
        hdlr = child(moov, mdia[0], mdia[1], "hdlr")
        v = moov[mdhd[0]]
        timescale = struct.unpack(">I", moov[mdhd[0] + (20 if v == 1 else 12) :][:4])[0]
        handler = moov[hdlr[0] + 8 : hdlr[0] + 12].decode("latin-1")
        out[track_id] = (handler, timescale)
    return out


def video_timing(moof, video_id):
    """(base media decode time, duration, starts with a sync sample) of the video track in one fragment's moof
    payload, in its timescale."""
    for kind, s, e in boxes(moof):
        if kind != "traf":
            continue
        tfhd = child(moof, s, e, "tfhd")
        flags = struct.unpack(">I", moof[tfhd[0] : tfhd[0] + 4])[0] & 0xFFFFFF
        track_id = struct.unpack(">I", moof[tfhd[0] + 4 : tfhd[0] + 8])[0]
        if track_id != video_id:
            continue
        at = tfhd[0] + 8
        at += 8 if flags & 0x01 else 0
        at += 4 if flags & 0x02 else 0
        default_duration = struct.unpack(">I", moof[at : at + 4])[0] if flags & 0x08 else 0
        at += 4 if flags & 0x08 else 0
        at += 4 if flags & 0x10 else 0
        sample_flags = struct.unpack(">I", moof[at : at + 4])[0] if flags & 0x20 else 0x10000
        tfdt = child(moof, s, e, "tfdt")
        version = moof[tfdt[0]]
        if version == 1:
            base = struct.unpack(">Q", moof[tfdt[0] + 4 : tfdt[0] + 12])[0]
        else:
            base = struct.unpack(">I", moof[tfdt[0] + 4 : tfdt[0] + 8])[0]
        duration, first_flags = 0, None
        for k, ts, te in boxes(moof, s, e):
            if k != "trun":
                continue
            tflags = struct.unpack(">I", moof[ts : ts + 4])[0] & 0xFFFFFF
            count = struct.unpack(">I", moof[ts + 4 : ts + 8])[0]
            p = ts + 8 + (4 if tflags & 0x01 else 0)
            if tflags & 0x04 and first_flags is None:
                first_flags = struct.unpack(">I", moof[p : p + 4])[0]
            p += 4 if tflags & 0x04 else 0
            per_sample = sum(4 for bit in (0x100, 0x200, 0x400, 0x800) if tflags & bit)
            if tflags & 0x400 and first_flags is None and count:
                at_flags = p + (4 if tflags & 0x100 else 0) + (4 if tflags & 0x200 else 0)
                first_flags = struct.unpack(">I", moof[at_flags : at_flags + 4])[0]
            for _ in range(count):
                if tflags & 0x100:
                    duration += struct.unpack(">I", moof[p : p + 4])[0]
                else:
                    duration += default_duration
                p += per_sample
        sync = not ((sample_flags if first_flags is None else first_flags) & 0x10000)
        return base, duration, sync
    return None


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_exact(stream, n):
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_box(stream):
    header = read_exact(stream, 8)
    if header is None:
        return None
    size, kind = struct.unpack(">I4s", header)
    if size == 1:
        large = read_exact(stream, 8)
        size = struct.unpack(">Q", large)[0]
        header += large
    body = read_exact(stream, size - len(header))
    if body is None:
        return None
    return kind.decode("latin-1"), header + body


class Packager:
    def __init__(self, out, segment, part, window):
        self.out, self.segment, self.part, self.window = out, segment, part, window
        # PART-TARGET bounds every part (RFC 8216bis §4.4.3.7), and ffmpeg's first fragment carries the
        # encoder's start offset (about 20 ms more): a tenth of slack, fixed for the stream's life.
        self.part_target = round(part * 1.1, 3)
        self.segments = []  # finished: (msn, duration, [part durations], program date)
        self.msn = 0
        self.parts = []  # parts of the segment being written: (duration, independent)
        self.current = []  # bytes of those parts
        self.start_wall = None

    def name(self, msn, part=None):
        return f"seg{msn}.m4s" if part is None else f"seg{msn}.{part}.m4s"

    def add_fragment(self, data, seconds, starts_segment):
        if starts_segment and self.parts:
            self.finish_segment()
        if not self.parts:
            self.start_wall = time.time()
        index = len(self.parts)
        write_atomic(os.path.join(self.out, self.name(self.msn, index)), data)
        self.parts.append((seconds, starts_segment))
        self.current.append(data)
        self.write_playlist()

    def finish_segment(self):
        write_atomic(os.path.join(self.out, self.name(self.msn)), b"".join(self.current))
        duration = sum(d for d, _ in self.parts)
        self.segments.append((self.msn, duration, list(self.parts), self.start_wall))
        self.msn += 1
        self.parts, self.current = [], []
        for old, _, parts, _ in self.segments[: -2 * self.window]:
            for p in range(len(parts)):
                remove(os.path.join(self.out, self.name(old, p)))
            remove(os.path.join(self.out, self.name(old)))
        self.segments = self.segments[-2 * self.window :]

    def write_playlist(self):
        shown = self.segments[-self.window :]
        first = shown[0][0] if shown else self.msn
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:9",
            f"#EXT-X-TARGETDURATION:{round(self.segment)}",
            f"#EXT-X-PART-INF:PART-TARGET={self.part_target:.3f}",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
            f"PART-HOLD-BACK={3 * self.part_target:.3f},HOLD-BACK={3 * self.segment:.3f}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
            '#EXT-X-MAP:URI="init.mp4"',
        ]
        # Parts are listed for the segments within about three target durations of the end (RFC 8216bis §4.4.4.9).
        with_parts = {msn for msn, _, _, _ in shown[-2:]}
        for msn, duration, parts, wall in shown:
            if wall and msn == first:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{stamp}.{int(wall % 1 * 1000):03d}Z")
            if msn in with_parts:
                lines += self.part_lines(msn, parts)
            lines += [f"#EXTINF:{duration:.5f},", self.name(msn)]
        lines += self.part_lines(self.msn, self.parts)
        # The next part: the next of this segment, or the first of the next once this one is full (its next
        # fragment starts with a keyframe, and a new segment).
        if sum(d for d, _ in self.parts) >= self.segment - self.part / 2:
            hint = self.name(self.msn + 1, 0)
        else:
            hint = self.name(self.msn, len(self.parts))
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint}"')
        write_atomic(os.path.join(self.out, "live.m3u8"), ("\n".join(lines) + "\n").encode())

    def part_lines(self, msn, parts):
        out = []
        for p, (seconds, independent) in enumerate(parts):
            extra = ",INDEPENDENT=YES" if independent else ""
            out.append(f'#EXT-X-PART:DURATION={seconds:.5f},URI="{self.name(msn, p)}"{extra}')
        return out


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def main():
    args = argparse.ArgumentParser()
    args.add_argument("out")
    args.add_argument("--segment", type=float, default=2.0)
    args.add_argument("--part", type=float, default=0.3334)
    args.add_argument("--window", type=int, default=6)
    opts = args.parse_args()
    os.makedirs(opts.out, exist_ok=True)
    stdin = sys.stdin.buffer
    packager = Packager(opts.out, opts.segment, opts.part, opts.window)
    init, video = b"", None
    moof = None
    while True:
        box = read_box(stdin)
        if box is None:
            break
        kind, data = box
        if kind in ("ftyp", "moov"):
            init += data
            if kind == "moov":
                write_atomic(os.path.join(opts.out, "init.mp4"), init)
                found = tracks(data[8:])
                video = next((t for t, (h, _) in found.items() if h == "vide"), None)
                timescale = found[video][1]
        elif kind == "moof":
            moof = data
        elif kind == "mdat" and moof is not None:
            _, duration, sync = video_timing(moof[8:], video)
            # A keyframe comes every segment duration (ffmpeg's -g), and only there.
            packager.add_fragment(moof + data, duration / timescale, sync)
            moof = None
        # mfra (at the end) and anything else is not media.
    if packager.parts:
        packager.finish_segment()


if __name__ == "__main__":
    main()
