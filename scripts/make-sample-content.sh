#!/usr/bin/env bash
# make-sample-content.sh: generate the sample titles the origin serves (origin/sample-content/).
#
# Makes two short synthetic titles with ffmpeg (lavfi sources, nothing downloaded), each with three H.264
# video renditions (main profile, yuv420p, closed GOP, one keyframe at every segment start), one AAC
# stereo audio rendition and English WebVTT subtitles, under OUT/titles/<slug>/:
#
#   titles/test-pattern/   "Test Pattern": testsrc2 + a beeping 440 Hz tone
#     hls/master.m3u8        HLS, MPEG-TS segments: hls/v0 hls/v1 hls/v2 (video), hls/audio (EXT-X-MEDIA AUDIO),
#                            hls/subs/en.m3u8 (EXT-X-MEDIA SUBTITLES, one WebVTT segment over the whole title)
#     dash/manifest.mpd      DASH, fMP4 SegmentTemplate + SegmentTimeline, 3 video + 1 audio representation,
#                            text AdaptationSet (text/vtt, lang en) -> BaseURL ../subs/en.vtt
#     mp4/manifest.mpd       one fragmented MP4 per rendition (mp4/v0.mp4 v1.mp4 v2.mp4 audio.mp4) addressed by
#                            byte ranges: DASH on-demand profile, SegmentBase indexRange (global sidx)
#     mp4/master.m3u8        HLS over the same files with EXT-X-BYTERANGE (+ mp4/subs/en.m3u8)
#     subs/en.vtt            the subtitles (HLS packagings carry a copy with an X-TIMESTAMP-MAP header)
#     poster.jpg meta.json   320x180 frame grab; title metadata + every packaging's manifest key and renditions
#   titles/mandelbrot/     "Mandelbrot": lavfi mandelbrot zoom + a two-tone chord, packaged as CMAF:
#     cmaf/master.m3u8       HLS with fMP4 segments     } both over the same init-N.m4s / chunk-N-NNNNN.m4s
#     cmaf/manifest.mpd      DASH SegmentTimeline       } (+ cmaf/subs/en.m3u8, text AdaptationSet -> ../subs/en.vtt)
#     subs/en.vtt poster.jpg meta.json
#
# All manifests use relative URIs only. The output is byte-for-byte reproducible with the same ffmpeg build
# (x264 runs single-threaded for that), except with --large, which encodes multi-threaded for speed.
#
# Usage: scripts/make-sample-content.sh [--out DIR] [--duration SECONDS] [--large] [--no-verify]
#   --out DIR         output directory (default: origin/sample-content in the repository; with --large:
#                     data/sample-content-large, which is git-ignored)
#   --duration SECS   title duration (default 24; with --large 120)
#   --large           benchmark set: 1920x1080 / 1280x720 / 960x540 renditions, 2 minutes, higher bitrates
#   --no-verify       skip the verification step
#
# Verification (default on): serves OUT on 127.0.0.1 with `python3 -m http.server` (plus a stdlib Range-capable
# server for the byte-range HLS playlist, which python's http.server cannot serve: it ignores Range), then for
# every master playlist and MPD runs
#   ffmpeg -hide_banner -nostdin -loglevel repeat+level+verbose -rw_timeout 10000000 -i URL -map 0 -f null -
# and checks the log for [warning]/[error]/[fatal]/[panic] lines and the frame counts of every video stream.
# ffmpeg 5.x cannot pass that exact command on a manifest carrying subtitles (see verify_manifest below), so
# each manifest gets three runs:
#   exact  the command above verbatim; only the two known subtitle messages explained below are tolerated
#   media  + -strict experimental, -map -0:s: no warning at all, 3 video streams with duration*fps frames, audio
#   subs   + -strict experimental, -map 0:s -c:s webvtt: no warning at all, every cue of subs/en.vtt decoded
# It also checks that every manifest lists 3 video + 1 audio + 1 subtitle track, that every URI is relative
# and resolves to a file, and that no file in a title directory is unreferenced.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

die() { echo "make-sample-content: error: $*" >&2; exit 1; }
log() { echo "make-sample-content: $*" >&2; }

OUT=""; DUR=""; LARGE=0; VERIFY=1
while [ $# -gt 0 ]; do
  case $1 in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2;;
    --out=*) OUT=${1#--out=}; shift;;
    --duration) [ $# -ge 2 ] || die "--duration needs a number of seconds"; DUR=$2; shift 2;;
    --duration=*) DUR=${1#--duration=}; shift;;
    --large) LARGE=1; shift;;
    --no-verify) VERIFY=0; shift;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) die "unknown argument: $1 (see --help)";;
  esac
done

command -v ffmpeg >/dev/null 2>&1 || die "ffmpeg not found in PATH (Debian: apt-get install ffmpeg)"
command -v ffprobe >/dev/null 2>&1 || die "ffprobe not found in PATH (it ships with ffmpeg)"
command -v python3 >/dev/null 2>&1 || die "python3 not found in PATH"
for enc in libx264 aac mjpeg; do
  ffmpeg -hide_banner -loglevel error -h encoder=$enc 2>/dev/null | grep "^Encoder $enc" >/dev/null \
    || die "this ffmpeg has no '$enc' encoder"
done

# ---- profile ------------------------------------------------------------------------------------------
FPS=25
SEG=4                       # segment duration, seconds; GOP = SEG*FPS frames, closed, no scene-cut keyframes
AR=48000                    # audio sample rate
if [ $LARGE = 1 ]; then
  : "${DUR:=120}"; : "${OUT:=$ROOT/data/sample-content-large}"
  # name WxH video-kbit/s maxrate bufsize
  # (not 854x480: ffmpeg's dash muxer rejects renditions whose aspect ratio differs from 16:9 in one AdaptationSet)
  RENDITIONS=("v0 1920x1080 3000 3600 6000" "v1 1280x720 1800 2160 3600" "v2 960x540 1000 1200 2000")
  MANDEL_SIZE=960x540       # the mandelbrot source is slow (single-threaded): render at 540p, scale up
  ABR=128k; PRESET=veryfast; X264_THREADS=0     # all cores; x264 output then varies from run to run
else
  : "${DUR:=24}"; : "${OUT:=$ROOT/origin/sample-content}"
  RENDITIONS=("v0 640x360 250 300 500" "v1 480x270 150 180 300" "v2 320x180 80 96 160")
  MANDEL_SIZE=640x360
  ABR=64k; PRESET=medium; X264_THREADS=1      # x264 is only bit-exact across runs with one thread
fi
python3 -c "import sys; d=float(sys.argv[1]); sys.exit(0 if $SEG <= d <= 3600 else 1)" "$DUR" 2>/dev/null \
  || die "--duration must be a number of seconds between $SEG and 3600 (got '$DUR')"
FRAMES=$(python3 -c "import math,sys; print(math.ceil(float(sys.argv[1])*$FPS - 1e-9))" "$DUR")
# AAC priming: the encoder adds 1024 samples in front; feed 1024 fewer so the audio timeline ends at DUR
# like the video (otherwise the segmenters leave a ~20 ms audio segment at the end).
ASAMPLES=$(python3 -c "import sys; print(round(float(sys.argv[1])*$AR) - 1024)" "$DUR")
GOP=$((SEG * FPS))

mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/make-sample-content.XXXXXX")
SERVER_PIDS=(); KEEP_WORK=0
cleanup() {
  local p
  for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ $KEEP_WORK = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
T0=$(date +%s.%N)

# ---- python helpers (stdlib only) ----------------------------------------------------------------------
PY=$WORK/helpers.py
cat >"$PY" <<'PYEOF'
import json, math, os, re, struct, sys
import xml.etree.ElementTree as ET

NS = 'urn:mpeg:dash:schema:mpd:2011'
ET.register_namespace('', NS)
ET.register_namespace('xsi', 'http://www.w3.org/2001/XMLSchema-instance')
ET.register_namespace('xlink', 'http://www.w3.org/1999/xlink')
def q(tag): return '{%s}%s' % (NS, tag)

# -- ISO BMFF ---------------------------------------------------------------------------------------------
def top_boxes(path):
    out, d = [], open(path, 'rb').read()
    off = 0
    while off + 8 <= len(d):
        size, typ = struct.unpack('>I4s', d[off:off + 8])
        if size == 1: size = struct.unpack('>Q', d[off + 8:off + 16])[0]
        if size == 0: size = len(d) - off
        out.append((typ.decode('latin1'), off, size)); off += size
    return out

def cmd_avc_codecs(args):
    """RFC 6381 codec strings of every avcC box in file order (= track order in a moov), one per line."""
    d, i = open(args[0], 'rb').read(), 0
    while True:
        i = d.find(b'avcC', i)
        if i < 0: return
        print('avc1.%02x%02x%02x' % (d[i + 5], d[i + 6], d[i + 7])); i += 4

# -- HLS --------------------------------------------------------------------------------------------------
def hls_segments(path):
    """[(uri, duration, nbytes)] of a media playlist; nbytes from BYTERANGE or the file size."""
    base, segs, dur, br, last_end = os.path.dirname(path), [], None, None, {}
    for line in open(path).read().splitlines():
        line = line.strip()
        if line.startswith('#EXTINF:'): dur = float(line[8:].split(',')[0])
        elif line.startswith('#EXT-X-BYTERANGE:'):
            v = line.split(':', 1)[1]; n, _, o = v.partition('@'); br = (int(n), int(o) if o else None)
        elif line and not line.startswith('#'):
            n = br[0] if br else os.path.getsize(os.path.join(base, line))
            segs.append((line, dur, n)); dur = br = None
    return segs

def bitrates(path):
    segs = hls_segments(path)
    total_d = sum(s[1] for s in segs)
    peak = max(s[2] * 8 / s[1] for s in segs if s[1] > 0.5) if any(s[1] > 0.5 for s in segs) else 0
    avg = sum(s[2] for s in segs) * 8 / total_d
    return int(math.ceil(peak)), int(math.ceil(avg))

def cmd_hls_media_fix(args):
    """Drop PROGRAM-DATE-TIME, mark VOD, mark independent segments; --map-moov: EXT-X-MAP = ftyp+moov only."""
    path, map_moov = args[0], '--map-moov' in args
    lines, out = open(path).read().splitlines(), []
    for line in lines:
        if line.startswith('#EXT-X-PROGRAM-DATE-TIME') or line.startswith('#EXT-X-PLAYLIST-TYPE') \
           or line.startswith('#EXT-X-INDEPENDENT-SEGMENTS'):
            continue
        if map_moov and line.startswith('#EXT-X-MAP:'):
            uri = re.search(r'URI="([^"]+)"', line).group(1)
            boxes = top_boxes(os.path.join(os.path.dirname(path), uri))
            moov = [b for b in boxes if b[0] == 'moov'][0]
            assert boxes[0][0] == 'ftyp' and boxes[1][0] == 'moov', boxes[:3]
            line = '#EXT-X-MAP:URI="%s",BYTERANGE="%d@0"' % (uri, moov[1] + moov[2])
        out.append(line)
        if line.startswith('#EXT-X-TARGETDURATION'):
            out += ['#EXT-X-PLAYLIST-TYPE:VOD', '#EXT-X-INDEPENDENT-SEGMENTS']
    open(path, 'w').write('\n'.join(out) + '\n')

def cmd_hls_master(args):
    """hls-master OUT FPS AUDIO_PL AUDIO_CODEC SUBS_PL {VIDEO_PL RES CODEC}...  (paths relative to OUT's dir)"""
    out, fps, apl, acodec, spl, rest = args[0], float(args[1]), args[2], args[3], args[4], args[5:]
    base = os.path.dirname(out)
    apeak, aavg = bitrates(os.path.join(base, apl))
    lines = ['#EXTM3U', '#EXT-X-VERSION:6', '#EXT-X-INDEPENDENT-SEGMENTS',
             '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="English",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,'
             'CHANNELS="2",URI="%s"' % apl,
             '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="English",LANGUAGE="en",DEFAULT=NO,AUTOSELECT=YES,'
             'FORCED=NO,URI="%s"' % spl]
    for i in range(0, len(rest), 3):
        pl, res, codec = rest[i:i + 3]
        vpeak, vavg = bitrates(os.path.join(base, pl))
        lines.append('#EXT-X-STREAM-INF:BANDWIDTH=%d,AVERAGE-BANDWIDTH=%d,CODECS="%s,%s",RESOLUTION=%s,'
                     'FRAME-RATE=%.3f,AUDIO="audio",SUBTITLES="subs"' % (vpeak + apeak, vavg + aavg, codec, acodec,
                                                                         res, fps))
        lines.append(pl)
    open(out, 'w').write('\n'.join(lines) + '\n')

# -- subtitles --------------------------------------------------------------------------------------------
def ts(t):
    ms = int(round(t * 1000)); return '%02d:%02d:%02d.%03d' % (ms // 3600000, ms // 60000 % 60, ms // 1000 % 60, ms % 1000)

def cmd_vtt(args):
    """vtt OUT TITLE DURATION SEG: one cue inside every segment (0.5 s in, 0.5 s before its end)."""
    out, title, dur, seg = args[0], args[1], float(args[2]), float(args[3])
    n = int(math.ceil(dur / seg - 1e-9)); cues = ['WEBVTT', '']
    for k in range(n):
        a, b = k * seg + 0.5, min((k + 1) * seg, dur) - 0.5
        if b - a < 0.5: continue
        text = '%s: part %d of %d' % (title, k + 1, n)
        if k == 0: text = '%s\n(English subtitles, sample content)' % title
        cues += ['%d' % (k + 1), '%s --> %s' % (ts(a), ts(b)), text, '']
    open(out, 'w').write('\n'.join(cues))
    print(sum(1 for c in cues if '-->' in c))

def cmd_subs_hls(args):
    """subs-hls DIR SRC_VTT MPEGTS DURATION: DIR/en.vtt (copy + X-TIMESTAMP-MAP) and DIR/en.m3u8 (1 segment)."""
    d, src, mpegts, dur = args[0], args[1], int(args[2]), float(args[3])
    os.makedirs(d, exist_ok=True)
    body = open(src).read().split('\n', 1)[1]
    open(os.path.join(d, 'en.vtt'), 'w').write(
        'WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:%d,LOCAL:00:00:00.000\n%s' % (mpegts, body))
    open(os.path.join(d, 'en.m3u8'), 'w').write('\n'.join([
        '#EXTM3U', '#EXT-X-VERSION:6', '#EXT-X-TARGETDURATION:%d' % math.ceil(dur), '#EXT-X-MEDIA-SEQUENCE:0',
        '#EXT-X-PLAYLIST-TYPE:VOD', '#EXTINF:%.6f,' % dur, 'en.vtt', '#EXT-X-ENDLIST']) + '\n')

# -- DASH -------------------------------------------------------------------------------------------------
def cmd_mpd_merge(args):
    """mpd-merge VIDEO_MPD AUDIO_MPD OUT AUDIO_REP_ID SUBS_URL TITLE [--ondemand]
    One MPD: video AdaptationSet of the first, audio AdaptationSet of the second, a text/vtt AdaptationSet.
    --ondemand: SegmentList (single file) -> SegmentBase indexRange over each file's global sidx."""
    vpath, apath, out, arep, subs, title = args[:6]
    ondemand = '--ondemand' in args
    vt, at = ET.parse(vpath), ET.parse(apath)
    mpd = vt.getroot(); period = mpd.find(q('Period'))
    for tag in ('ProgramInformation', 'ServiceDescription'):
        for e in mpd.findall(q(tag)): mpd.remove(e)
    pi = ET.Element(q('ProgramInformation')); ET.SubElement(pi, q('Title')).text = title
    mpd.insert(0, pi)
    vas = period.findall(q('AdaptationSet')); assert len(vas) == 1, 'video MPD must have one AdaptationSet'
    aas = at.getroot().find(q('Period')).findall(q('AdaptationSet')); assert len(aas) == 1
    vas, aas = vas[0], aas[0]
    vas.set('id', '0'); vas.attrib.pop('lang', None)
    aas.set('id', '1'); aas.set('lang', 'en')
    areps = aas.findall(q('Representation')); assert len(areps) == 1
    areps[0].set('id', arep)
    ET.SubElement(aas, q('Role'), schemeIdUri='urn:mpeg:dash:role:2011', value='main')
    period.append(aas)
    tas = ET.SubElement(period, q('AdaptationSet'), id='2', contentType='text', mimeType='text/vtt', lang='en')
    ET.SubElement(tas, q('Role'), schemeIdUri='urn:mpeg:dash:role:2011', value='subtitle')
    trep = ET.SubElement(tas, q('Representation'), id='subs-en', bandwidth='256')
    ET.SubElement(trep, q('BaseURL')).text = subs
    # children order inside AdaptationSet: Role before Representation
    for aset in (aas,):
        reps = [c for c in aset if c.tag == q('Representation')]
        for r in reps: aset.remove(r); aset.append(r)
    if ondemand:
        mpd.set('profiles', 'urn:mpeg:dash:profile:isoff-on-demand:2011')
        mpd.attrib.pop('maxSegmentDuration', None)
        base = os.path.dirname(out)
        for aset in (vas, aas):
            for k_old, k_new in (('segmentAlignment', 'subsegmentAlignment'), ('startWithSAP', 'subsegmentStartsWithSAP')):
                if k_old in aset.attrib: aset.set(k_new, aset.attrib.pop(k_old))
            aset.attrib.pop('bitstreamSwitching', None)
            for rep in aset.findall(q('Representation')):
                url = rep.find(q('BaseURL')).text
                sl = rep.find(q('SegmentList')); rep.remove(sl)
                boxes = top_boxes(os.path.join(base, url))
                names = [b[0] for b in boxes]
                assert names[:3] == ['ftyp', 'moov', 'sidx'], (url, names[:4])
                moov, sidx = boxes[1], boxes[2]
                sb = ET.SubElement(rep, q('SegmentBase'), indexRange='%d-%d' % (sidx[1], sidx[1] + sidx[2] - 1),
                                   indexRangeExact='true')
                ET.SubElement(sb, q('Initialization'), range='0-%d' % (moov[1] + moov[2] - 1))
    ET.indent(vt, space='  ')
    with open(out, 'w', encoding='utf-8') as f:
        f.write('<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(mpd, encoding='unicode') + '\n')

def mpd_info(path):
    """[(kind, rep_id, bandwidth, resolution, codecs, lang, [referenced relative urls])]"""
    root = ET.parse(path).getroot(); res = []
    for aset in root.iter(q('AdaptationSet')):
        kind = aset.get('contentType') or (aset.get('mimeType') or '').split('/')[0]
        for rep in aset.findall(q('Representation')):
            urls = []
            bu = rep.find(q('BaseURL')); base = bu.text if bu is not None else None
            st = rep.find(q('SegmentTemplate'))
            if st is None: st = aset.find(q('SegmentTemplate'))
            rid, bw = rep.get('id'), rep.get('bandwidth')
            def fill(t, num=None, time=None):
                t = t.replace('$RepresentationID$', rid).replace('$Bandwidth$', bw or '')
                t = re.sub(r'\$Number(%0(\d+)d)?\$', lambda m: ('%0' + m.group(2) + 'd' if m.group(2) else '%d') % num, t) if num is not None else t
                t = re.sub(r'\$Time\$', str(time), t) if time is not None else t
                return t
            if st is not None:
                if st.get('initialization'): urls.append(fill(st.get('initialization')))
                tl = st.find(q('SegmentTimeline')); n = int(st.get('startNumber', '1')); t = 0
                assert tl is not None, 'SegmentTemplate without SegmentTimeline'
                for s in tl.findall(q('S')):
                    t = int(s.get('t', t))
                    for _ in range(int(s.get('r', '0')) + 1):
                        urls.append(fill(st.get('media'), n, t)); n += 1; t += int(s.get('d'))
            elif base:
                urls.append(base)
            codecs = rep.get('codecs') or aset.get('codecs') or ('wvtt' if kind == 'text' else '')
            resol = '%sx%s' % (rep.get('width'), rep.get('height')) if rep.get('width') else None
            res.append((kind, rid, int(bw) if bw else None, resol, codecs, aset.get('lang'), urls))
    return res

def master_info(path):
    """[(kind, uri, bandwidth, avg, resolution, codecs, lang)] of an HLS master playlist."""
    lines = open(path).read().splitlines(); res = []
    def attrs(s): return dict((k, v.strip('"')) for k, v in re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', s))
    for i, line in enumerate(lines):
        if line.startswith('#EXT-X-MEDIA:'):
            a = attrs(line[13:]); res.append((a['TYPE'].lower(), a.get('URI'), None, None, None, None, a.get('LANGUAGE')))
        elif line.startswith('#EXT-X-STREAM-INF:'):
            a = attrs(line[18:])
            res.append(('video', lines[i + 1].strip(), int(a['BANDWIDTH']), int(a.get('AVERAGE-BANDWIDTH', 0)) or None,
                        a.get('RESOLUTION'), a.get('CODECS'), None))
    return res

def media_refs(path):
    out = []
    for line in open(path).read().splitlines():
        m = re.search(r'URI="([^"]+)"', line)
        if line.startswith('#EXT-X-MAP') and m: out.append(m.group(1))
        elif line and not line.startswith('#'): out.append(line.strip())
    return out

def check_rel(u):
    assert '://' not in u and not u.startswith('/') and not u.startswith('data:'), 'absolute URI: ' + u
    return u

def refs_of(manifest):
    """Every object a manifest references (transitively), as paths relative to the manifest's directory."""
    base = os.path.dirname(manifest); refs = set()
    if manifest.endswith('.mpd'):
        for r in mpd_info(manifest):
            for u in r[6]: refs.add(os.path.normpath(check_rel(u)))
    else:
        for r in master_info(manifest):
            pl = check_rel(r[1]); refs.add(os.path.normpath(pl))
            for u in media_refs(os.path.join(base, pl)):
                refs.add(os.path.normpath(os.path.join(os.path.dirname(pl), check_rel(u))))
    return refs

def cmd_inspect(args):
    """inspect TITLE_DIR MANIFEST...: per manifest the track counts; fails on missing/unreferenced files."""
    tdir, manifests, ok = args[0], args[1:], True
    referenced = {'meta.json', 'poster.jpg', 'subs/en.vtt'} | set(manifests)
    for m in manifests:
        p = os.path.join(tdir, m)
        if m.endswith('.mpd'):
            info = mpd_info(p)
            v = [r for r in info if r[0] == 'video']; a = [r for r in info if r[0] == 'audio']
            s = [r for r in info if r[0] == 'text' and r[5] == 'en']
            desc = 'video %s, audio %d, subtitles %d (%s)' % (
                ' '.join('%s@%d' % (r[3], r[2]) for r in v), len(a), len(s), ','.join(r[6][0] for r in s))
        else:
            info = master_info(p)
            v = [r for r in info if r[0] == 'video']; a = [r for r in info if r[0] == 'audio']
            s = [r for r in info if r[0] == 'subtitles' and r[6] == 'en']
            desc = 'video %s, audio %d, subtitles %d (%s)' % (
                ' '.join('%s@%d' % (r[4], r[2]) for r in v), len(a), len(s), ','.join(r[1] for r in s))
        good = len(v) == 3 and len(a) == 1 and len(s) == 1
        print('  %-4s %-22s %s' % ('ok' if good else 'FAIL', m, desc)); ok &= good
        for r in refs_of(p):
            key = os.path.normpath(os.path.join(os.path.dirname(m), r))
            if not os.path.isfile(os.path.join(tdir, key)):
                print('  FAIL %s references missing %s' % (m, key)); ok = False
            referenced.add(key)
    present = set()
    for dp, _, fs in os.walk(tdir):
        for f in fs: present.add(os.path.relpath(os.path.join(dp, f), tdir))
    for f in sorted(present - referenced):
        print('  FAIL unreferenced file %s' % f); ok = False
    sys.exit(0 if ok else 1)

def cmd_meta(args):
    """meta TITLE_DIR OUTKEY_PREFIX JSON_FIELDS PACKAGING..., PACKAGING = name:protocol:container:manifest"""
    tdir, prefix, fields = args[0], args[1], json.loads(args[2])
    meta = dict(fields)
    meta['poster'] = prefix + 'poster.jpg'
    meta['subtitles'] = [{'language': 'en', 'label': 'English', 'format': 'webvtt', 'key': prefix + 'subs/en.vtt'}]
    meta['packagings'] = []
    for spec in args[3:]:
        name, proto, container, addressing, man = spec.split(':')
        p = os.path.join(tdir, man); rends = []
        if man.endswith('.mpd'):
            for kind, rid, bw, res, codecs, lang, _ in mpd_info(p):
                r = {'type': {'text': 'subtitles'}.get(kind, kind), 'id': rid, 'bandwidth': bw, 'codecs': codecs}
                if res: r['resolution'] = res
                if lang: r['language'] = lang
                rends.append(r)
        else:
            for kind, uri, bw, avg, res, codecs, lang in master_info(p):
                if kind == 'video':
                    r = {'type': 'video', 'uri': uri, 'bandwidth': bw, 'average_bandwidth': avg,
                         'resolution': res, 'codecs': codecs.split(',')[0]}
                elif kind == 'audio':
                    peak, avg = bitrates(os.path.join(os.path.dirname(p), uri))
                    r = {'type': 'audio', 'uri': uri, 'bandwidth': peak, 'average_bandwidth': avg,
                         'codecs': 'mp4a.40.2', 'language': lang}
                else:
                    r = {'type': 'subtitles', 'uri': uri, 'codecs': 'wvtt', 'language': lang}
                rends.append(r)
        order = {'video': 0, 'audio': 1, 'subtitles': 2}
        rends.sort(key=lambda r: order[r['type']])
        note = ('video: EXT-X-STREAM-INF BANDWIDTH/AVERAGE-BANDWIDTH of the variant (video + audio, peak/average '
                'segment bitrate); audio: peak/average of its media playlist') if proto == 'hls' else \
               'Representation@bandwidth'
        meta['packagings'].append({'name': name, 'protocol': proto, 'container': container,
                                   'addressing': addressing, 'manifest': prefix + man, 'bandwidth': note,
                                   'renditions': rends})
    with open(os.path.join(tdir, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=2); f.write('\n')

def cmd_frames_check(args):
    """frames-check LOG MODE EXPECT_VIDEO_FRAMES EXPECT_CUES: prints a summary line, exit 1 on failure."""
    log, mode, expect, cues = args[0], args[1], int(args[2]), int(args[3])
    text = open(log, errors='replace').read()
    bad = re.findall(r'^.*\[(?:warning|error|fatal|panic)\].*$', text, re.M)
    known = [r"\[hls @ 0x[0-9a-f]+\] \[warning\] Can't support the subtitle\(uri: [^)]*\)$",
             r"^\[fatal\] Automatic encoder selection failed for output stream #0:\d+\. Default encoder for format "
             r"null \(codec none\) is probably disabled\. Please choose an encoder manually\.$",
             r"^\[fatal\] Error selecting an encoder for stream 0:\d+$"]
    unknown = [b for b in bad if not (mode == 'exact' and any(re.search(k, b) for k in known))]
    st = re.findall(r'Input stream #\d+:\d+ \((video|audio|subtitle)\): (\d+) packets read .*?; (\d+) frames decoded', text)
    vids = [int(s[2]) for s in st if s[0] == 'video']; auds = [int(s[2]) for s in st if s[0] == 'audio']
    subs = [int(s[2]) for s in st if s[0] == 'subtitle']
    fail = list(unknown)
    if mode == 'media':
        if len(vids) != 3 or any(v != expect for v in vids): fail.append('video frames %s, want 3 x %d' % (vids, expect))
        if len(auds) != 1 or auds[0] == 0: fail.append('audio frames %s' % auds)
    if mode == 'subs' and subs != [cues]: fail.append('subtitle frames %s, want [%d]' % (subs, cues))
    summary = 'video frames %s audio frames %s subtitle frames %s; warnings/errors: %d (%d known)' % (
        vids or '-', auds or '-', subs or '-', len(bad), len(bad) - len(unknown))
    print(('ok   ' if not fail else 'FAIL ') + summary)
    for b in bad: print('       ' + ('known:   ' if b not in unknown else 'UNKNOWN: ') + b.strip())
    for f in fail:
        if f not in unknown: print('       ' + f)
    sys.exit(1 if fail else 0)

def cmd_free_port(args):
    import socket
    s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()

if __name__ == '__main__':
    cmd = sys.argv[1].replace('-', '_')
    globals()['cmd_' + cmd](sys.argv[2:])
PYEOF
py() { python3 "$PY" "$@"; }

# ---- encoding -------------------------------------------------------------------------------------------
# encode_mezzanine OUT.mp4 VIDEO_LAVFI AUDIO_LAVFI: one MP4 with the three video renditions + the audio,
# encoded once; every packaging below is a stream copy of it, so all packagings carry identical media.
# No B-frames (-bf 0): ffmpeg's DASH demuxer ends the whole input when the representation with the lowest
# timestamp hits EOF; with B-frames the last packets in decode order have lower timestamps than the last frame,
# so up to 2 frames per rendition went undecoded (598/600). Without them every rendition decodes completely.
encode_mezzanine() {
  local out=$1 vsrc=$2 asrc=$3 i fc="" maps=() rc=() name size kb max buf
  fc="[0:v]split=${#RENDITIONS[@]}"
  for i in "${!RENDITIONS[@]}"; do fc+="[s$i]"; done
  for i in "${!RENDITIONS[@]}"; do
    read -r name size kb max buf <<<"${RENDITIONS[$i]}"
    fc+=";[s$i]scale=${size/x/:}:flags=bicubic,setsar=1[o$i]"
    maps+=(-map "[o$i]")
    rc+=(-b:v:$i ${kb}k -maxrate:v:$i ${max}k -bufsize:v:$i ${buf}k)
  done
  ffmpeg -hide_banner -nostdin -loglevel error -y \
    -f lavfi -t "$DUR" -i "$vsrc" -f lavfi -i "$asrc,atrim=end_sample=$ASAMPLES" \
    -filter_complex "$fc" "${maps[@]}" -map 1:a \
    -c:v libx264 -threads $X264_THREADS -preset $PRESET -profile:v main -pix_fmt yuv420p -r $FPS \
    -g $GOP -keyint_min $GOP -sc_threshold 0 -bf 0 -flags:v +cgop+bitexact -force_key_frames "expr:gte(t,n_forced*$SEG)" \
    "${rc[@]}" -c:a aac -b:a $ABR -ac 2 -ar $AR -flags:a +bitexact -metadata:s:a:0 language=eng \
    -fflags +bitexact -movflags +faststart "$out"
}

poster() { # poster OUT.jpg VIDEO_LAVFI: a 320x180 grab of the source at half time
  ffmpeg -hide_banner -nostdin -loglevel error -y -f lavfi -i "$2" -ss "$(python3 -c "print(float('$DUR')/2)")" \
    -frames:v 1 -vf scale=320:180:flags=bicubic -q:v 4 -flags +bitexact -fflags +bitexact "$1"
}

# ---- packaging ------------------------------------------------------------------------------------------
VMAPS=(-map 0:v:0 -map 0:v:1 -map 0:v:2)
DASHCOMMON=(-f dash -seg_duration $SEG -use_template 1 -use_timeline 1 -format_options movflags=+cmaf -fflags +bitexact)

# package_hls_ts MEZZ DIR: DIR/{v0,v1,v2,audio}/index.m3u8 + seg_NNN.ts
package_hls_ts() {
  local mezz=$1 dir=$2
  ffmpeg -hide_banner -nostdin -loglevel error -y -i "$mezz" "${VMAPS[@]}" -map 0:a:0 -c copy -fflags +bitexact \
    -f hls -hls_time $SEG -hls_playlist_type vod -hls_segment_type mpegts -hls_flags independent_segments \
    -hls_segment_filename "$dir/%v/seg_%03d.ts" \
    -var_stream_map 'v:0,name:v0 v:1,name:v1 v:2,name:v2 a:0,name:audio' "$dir/%v/index.m3u8"
}

# package_dash MEZZ DIR MODE: DASH (+ HLS media playlists) in DIR. Video and audio are segmented in two runs:
# in one run ffmpeg's dash muxer cuts audio only at video keyframes and leaves a stray ~20 ms audio segment at
# the end. MODE: template (SegmentTemplate+SegmentTimeline, init-N.m4s + chunk-N-NNNNN.m4s)
#              | single (one fragmented MP4 per rendition with a global sidx: v0.mp4 v1.mp4 v2.mp4 audio.mp4)
package_dash() {
  local mezz=$1 dir=$2 mode=$3 vnames anames i
  mkdir -p "$dir"
  if [ "$mode" = single ]; then
    vnames=(-single_file 1 -global_sidx 1 -use_template 0 -use_timeline 0 -single_file_name 'v$RepresentationID$.mp4')
    anames=(-single_file 1 -global_sidx 1 -use_template 0 -use_timeline 0 -single_file_name 'audio.mp4')
  else
    vnames=(-init_seg_name 'init-$RepresentationID$.m4s' -media_seg_name 'chunk-$RepresentationID$-$Number%05d$.m4s')
    anames=(-init_seg_name 'init-3.m4s' -media_seg_name 'chunk-3-$Number%05d$.m4s')
  fi
  ffmpeg -hide_banner -nostdin -loglevel error -y -i "$mezz" "${VMAPS[@]}" -c copy "${DASHCOMMON[@]}" \
    "${vnames[@]}" -hls_playlist 1 -hls_master_name video-master.m3u8 \
    -adaptation_sets 'id=0,streams=v' "$dir/video.mpd"
  for i in 0 1 2; do mv "$dir/media_$i.m3u8" "$dir/v$i.m3u8"; done
  ffmpeg -hide_banner -nostdin -loglevel error -y -i "$mezz" -map 0:a:0 -c copy "${DASHCOMMON[@]}" \
    "${anames[@]}" -hls_playlist 1 -hls_master_name audio-master.m3u8 \
    -adaptation_sets 'id=0,streams=a' "$dir/audio.mpd"
  mv "$dir/media_0.m3u8" "$dir/audio.m3u8"
  rm -f "$dir/video-master.m3u8" "$dir/audio-master.m3u8"
}

# mpegts_offset FILE: presentation start of the first video frame in 90 kHz units (for X-TIMESTAMP-MAP)
mpegts_offset() {
  local st
  st=$(ffprobe -v error -select_streams v:0 -show_entries stream=start_time -of default=nw=1:nk=1 "$1" | grep -m1 .)
  python3 -c "import sys; print(round(float(sys.argv[1])*90000))" "$st"
}

codec_of() { sed -n "$(( $2 + 1 ))p" <<<"$1"; }  # codec_of "LIST" INDEX

# ---- title 1: Test Pattern -------------------------------------------------------------------------------
make_test_pattern() {
  local slug=test-pattern t="$OUT/titles/test-pattern" mezz="$WORK/test-pattern.mp4" codecs cues i name size rest s
  local vsrc; vsrc="testsrc2=size=$(awk '{print $2}' <<<"${RENDITIONS[0]}"):rate=$FPS"
  local asrc="sine=frequency=440:beep_factor=4:sample_rate=$AR"
  rm -rf "$t"; mkdir -p "$t/subs"
  s=$(date +%s.%N); encode_mezzanine "$mezz" "$vsrc" "$asrc"; log "test-pattern: encoded in $(elapsed $s)s"
  codecs=$(py avc-codecs "$mezz")
  poster "$t/poster.jpg" "testsrc2=size=320x180:rate=$FPS"
  cues=$(py vtt "$t/subs/en.vtt" "Test Pattern" "$DUR" $SEG)

  # HLS, MPEG-TS
  package_hls_ts "$mezz" "$t/hls"
  py subs-hls "$t/hls/subs" "$t/subs/en.vtt" "$(mpegts_offset "$t/hls/v0/seg_000.ts")" "$DUR"
  local vargs=()
  for i in 0 1 2; do
    read -r name size rest <<<"${RENDITIONS[$i]}"; vargs+=("v$i/index.m3u8" "$size" "$(codec_of "$codecs" $i)")
  done
  py hls-master "$t/hls/master.m3u8" $FPS audio/index.m3u8 mp4a.40.2 subs/en.m3u8 "${vargs[@]}"

  # DASH, SegmentTemplate
  package_dash "$mezz" "$t/dash" template
  py mpd-merge "$t/dash/video.mpd" "$t/dash/audio.mpd" "$t/dash/manifest.mpd" 3 ../subs/en.vtt "Test Pattern"
  rm -f "$t/dash/video.mpd" "$t/dash/audio.mpd" "$t"/dash/*.m3u8   # DASH only here; HLS + DASH over one set of
                                                                    # segments is title 2's cmaf/

  # single file per rendition, byte ranges: DASH on-demand + HLS EXT-X-BYTERANGE
  package_dash "$mezz" "$t/mp4" single
  py mpd-merge "$t/mp4/video.mpd" "$t/mp4/audio.mpd" "$t/mp4/manifest.mpd" 3 ../subs/en.vtt "Test Pattern" --ondemand
  rm -f "$t/mp4/video.mpd" "$t/mp4/audio.mpd"
  vargs=()
  for i in 0 1 2; do
    py hls-media-fix "$t/mp4/v$i.m3u8" --map-moov
    read -r name size rest <<<"${RENDITIONS[$i]}"; vargs+=("v$i.m3u8" "$size" "$(codec_of "$codecs" $i)")
  done
  py hls-media-fix "$t/mp4/audio.m3u8" --map-moov
  py subs-hls "$t/mp4/subs" "$t/subs/en.vtt" "$(mpegts_offset "$t/mp4/v0.mp4")" "$DUR"
  py hls-master "$t/mp4/master.m3u8" $FPS audio.m3u8 mp4a.40.2 subs/en.m3u8 "${vargs[@]}"

  py meta "$t" "titles/$slug/" "$(python3 -c 'import json,sys; print(json.dumps({
      "title": "Test Pattern", "slug": "test-pattern", "year": 2025,
      "description": "A synthetic test card (ffmpeg testsrc2: colour bars, moving gradient, frame counter) with a beeping 440 Hz tone. Sample content for the CDN.",
      "duration_secs": float(sys.argv[1]) if float(sys.argv[1]) % 1 else int(float(sys.argv[1])),
      "genres": ["Test", "Technical"], "language": "en", "frame_rate": int(sys.argv[2]), "segment_duration_secs": int(sys.argv[3])}))' "$DUR" $FPS $SEG)" \
    "hls-ts:hls:mpegts:segments:hls/master.m3u8" \
    "dash:dash:fmp4:segments:dash/manifest.mpd" \
    "mp4-dash:dash:fmp4:byte-ranges:mp4/manifest.mpd" \
    "mp4-hls:hls:fmp4:byte-ranges:mp4/master.m3u8"
  echo "$cues" >"$WORK/test-pattern.cues"
}

# ---- title 2: Mandelbrot (CMAF) ---------------------------------------------------------------------------
make_mandelbrot() {
  local slug=mandelbrot t="$OUT/titles/mandelbrot" mezz="$WORK/mandelbrot.mp4" codecs cues i name size rest s
  local vsrc="mandelbrot=size=$MANDEL_SIZE:rate=$FPS:maxiter=1024"
  local asrc="aevalsrc=0.15*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*0.5*t))|0.15*sin(2*PI*330*t)*(0.6+0.4*cos(2*PI*0.5*t)):s=$AR:c=stereo"
  rm -rf "$t"; mkdir -p "$t/subs"
  s=$(date +%s.%N); encode_mezzanine "$mezz" "$vsrc" "$asrc"; log "mandelbrot: encoded in $(elapsed $s)s"
  codecs=$(py avc-codecs "$mezz")
  poster "$t/poster.jpg" "mandelbrot=size=320x180:rate=$FPS:maxiter=1024"
  cues=$(py vtt "$t/subs/en.vtt" "Mandelbrot" "$DUR" $SEG)

  package_dash "$mezz" "$t/cmaf" template
  py mpd-merge "$t/cmaf/video.mpd" "$t/cmaf/audio.mpd" "$t/cmaf/manifest.mpd" 3 ../subs/en.vtt "Mandelbrot"
  rm -f "$t/cmaf/video.mpd" "$t/cmaf/audio.mpd"
  local vargs=()
  for i in 0 1 2; do
    py hls-media-fix "$t/cmaf/v$i.m3u8"
    read -r name size rest <<<"${RENDITIONS[$i]}"; vargs+=("v$i.m3u8" "$size" "$(codec_of "$codecs" $i)")
  done
  py hls-media-fix "$t/cmaf/audio.m3u8"
  cat "$t/cmaf/init-0.m4s" "$t/cmaf/chunk-0-00001.m4s" >"$WORK/first.mp4"
  py subs-hls "$t/cmaf/subs" "$t/subs/en.vtt" "$(mpegts_offset "$WORK/first.mp4")" "$DUR"
  py hls-master "$t/cmaf/master.m3u8" $FPS audio.m3u8 mp4a.40.2 subs/en.m3u8 "${vargs[@]}"

  py meta "$t" "titles/$slug/" "$(python3 -c 'import json,sys; print(json.dumps({
      "title": "Mandelbrot", "slug": "mandelbrot", "year": 2025,
      "description": "A zoom into the Mandelbrot set (ffmpeg mandelbrot source) over a slowly pulsing two-tone chord. Sample content for the CDN, packaged as CMAF.",
      "duration_secs": float(sys.argv[1]) if float(sys.argv[1]) % 1 else int(float(sys.argv[1])),
      "genres": ["Abstract", "Mathematics"], "language": "en", "frame_rate": int(sys.argv[2]), "segment_duration_secs": int(sys.argv[3])}))' "$DUR" $FPS $SEG)" \
    "cmaf-hls:hls:cmaf:segments:cmaf/master.m3u8" \
    "cmaf-dash:dash:cmaf:segments:cmaf/manifest.mpd"
  echo "$cues" >"$WORK/mandelbrot.cues"
}

elapsed() { python3 -c "import time,sys; print('%.1f' % (time.time()-float(sys.argv[1])))" "$1"; }

log "out=$OUT duration=${DUR}s fps=$FPS segments=${SEG}s renditions: ${RENDITIONS[*]} audio=$ABR"
make_test_pattern
make_mandelbrot
log "generated in $(elapsed "$T0")s: $(du -sh "$OUT/titles" | cut -f1) in $(find "$OUT/titles" -type f | wc -l) files"

# ---- verification -----------------------------------------------------------------------------------------
[ $VERIFY = 1 ] || { log "verification skipped (--no-verify)"; exit 0; }

wait_port() { local i; for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; die "server on port $1 did not start"; }
PORT=$(py free-port)
python3 -m http.server --bind 127.0.0.1 "$PORT" --directory "$OUT" >"$WORK/http.log" 2>&1 &
SERVER_PIDS+=($!)
RPORT=$(py free-port)
cat >"$WORK/rangeserver.py" <<'PYEOF'
# python's http.server ignores Range (answers 200 with the whole file); this one answers 206 like a CDN would.
import http.server, os, re, sys
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *a): sys.stderr.write((fmt % a) + '\n')
    def send_head(self):
        rng, path = self.headers.get('Range'), self.translate_path(self.path)
        m = re.fullmatch(r'bytes=(\d*)-(\d*)', (rng or '').strip())
        if not m or not os.path.isfile(path) or m.group(0) == 'bytes=-':
            return super().send_head()
        size = os.path.getsize(path)
        if m.group(1) == '': start, end = max(0, size - int(m.group(2))), size - 1
        else: start, end = int(m.group(1)), min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        if start >= size or start > end:
            self.send_response(416); self.send_header('Content-Range', 'bytes */%d' % size)
            self.send_header('Content-Length', '0'); self.end_headers(); return None
        f = open(path, 'rb'); f.seek(start); self.remaining = end - start + 1
        self.send_response(206); self.send_header('Content-Type', self.guess_type(path))
        self.send_header('Accept-Ranges', 'bytes'); self.send_header('Content-Range', 'bytes %d-%d/%d' % (start, end, size))
        self.send_header('Content-Length', str(self.remaining)); self.end_headers()
        return f
    def copyfile(self, src, dst):
        n = getattr(self, 'remaining', None)
        if n is None: return super().copyfile(src, dst)
        while n > 0:
            b = src.read(min(65536, n))
            if not b: break
            dst.write(b); n -= len(b)
        self.remaining = None
os.chdir(sys.argv[2])
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
PYEOF
python3 "$WORK/rangeserver.py" "$RPORT" "$OUT" >"$WORK/rangeserver.log" 2>&1 &
SERVER_PIDS+=($!)
wait_port "$PORT"; wait_port "$RPORT"

FAILED=0
FF=(ffmpeg -hide_banner -nostdin -loglevel repeat+level+verbose -rw_timeout 10000000)
# verify_manifest KEY CUES
# Why three runs (ffmpeg 5.1):
#  - HLS: the hls demuxer skips every EXT-X-MEDIA TYPE=SUBTITLES rendition unless -strict experimental and says
#    "[warning] Can't support the subtitle(uri: ...)" while parsing the master (libavformat/hls.c new_rendition).
#  - DASH: the dash demuxer does read the text/vtt AdaptationSet, but `-map 0 -f null -` then aborts with
#    "[fatal] Automatic encoder selection failed ... Default encoder for format null (codec none)": the null
#    muxer has no default subtitle encoder. And with the subtitle stream kept, the dash demuxer ends the whole
#    input as soon as the subtitle track (one VTT file) hits EOF, i.e. at the last cue's start time, so media
#    and subtitles are decoded in separate runs.
verify_manifest() {
  local key=$1 cues=$2 port=$PORT mode log rc line
  if [[ $key == *.m3u8 ]] && grep -qs '^#EXT-X-BYTERANGE' "$OUT/$(dirname "$key")"/*.m3u8; then port=$RPORT; fi
  local url="http://127.0.0.1:$port/$key"
  for mode in exact media subs; do
    log="$WORK/verify-$(echo "$key" | tr '/' '_')-$mode.log"
    case $mode in
      exact) "${FF[@]}" -i "$url" -map 0 -f null - >"$log" 2>&1 && rc=0 || rc=$?;;
      media) "${FF[@]}" -strict experimental -i "$url" -map 0 -map -0:s -f null - >"$log" 2>&1 && rc=0 || rc=$?;;
      subs)  "${FF[@]}" -strict experimental -i "$url" -map 0:s -c:s webvtt -f null - >"$log" 2>&1 && rc=0 || rc=$?;;
    esac
    line=$(py frames-check "$log" $mode "$FRAMES" "$cues") || { FAILED=1; }
    [ $mode != exact ] && [ $rc != 0 ] && { line="FAIL ffmpeg exit $rc; $line"; FAILED=1; }
    printf '  %-5s %-38s %-5s rc=%s %s\n' "$mode" "$key" "$([ "$port" = "$RPORT" ] && echo range || echo plain)" "$rc" "$line"
  done
}

echo "== manifests and files"
py inspect "$OUT/titles/test-pattern" hls/master.m3u8 dash/manifest.mpd mp4/manifest.mpd mp4/master.m3u8 || FAILED=1
py inspect "$OUT/titles/mandelbrot" cmaf/master.m3u8 cmaf/manifest.mpd || FAILED=1
echo "== ffmpeg decode over HTTP (want exactly ${FRAMES} frames per video stream)"
for k in hls/master.m3u8 dash/manifest.mpd mp4/manifest.mpd mp4/master.m3u8; do
  verify_manifest "titles/test-pattern/$k" "$(cat "$WORK/test-pattern.cues")"
done
for k in cmaf/master.m3u8 cmaf/manifest.mpd; do
  verify_manifest "titles/mandelbrot/$k" "$(cat "$WORK/mandelbrot.cues")"
done
log "total time $(elapsed "$T0")s, output $(du -sh "$OUT" | cut -f1)"
[ $FAILED = 0 ] || { KEEP_WORK=1; die "verification FAILED (ffmpeg logs kept in $WORK)"; }
log "verification passed"
