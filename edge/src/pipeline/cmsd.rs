//! CMSD headers on an answer (`crate::cmsd` builds the values): `CMSD-Static` from the request (object type,
//! format, stream type) and whether this answer used a prefetch, `CMSD-Dynamic` from the connection's TCP state
//! and the edge's fill load. Which of them are sent is `[cmsd]` in the config.

use tokio::time::Instant;

use http::header::HeaderName;
use http::request::Parts;

use super::{Answer, Canonical, Edge};
use crate::cmcd::StreamType;
use crate::cmsd::{self, ConnSocket, Dynamic, QuicPath, Static};

impl Edge {
    /// Adds the configured CMSD headers to an answer of a GET or HEAD.
    pub(super) fn cmsd_headers(
        &self,
        parts: &Parts,
        request: &Canonical<'_>,
        answer: &mut Answer,
        prefetched: bool,
    ) {
        if !self.cmsd.send_static && !self.cmsd.send_dynamic {
            return;
        }
        let headers = answer.response.headers_mut();
        if self.cmsd.send_static {
            let player = crate::cmcd::from_request(parts.uri.query(), &parts.headers);
            let cmcd_ot = player
                .as_ref()
                .and_then(|c| c.object_type)
                .map(|ot| ot.as_str());
            // The player says whether it plays live; a blocking playlist request is live by definition.
            let live = match player.as_ref().and_then(|c| c.stream_type) {
                Some(StreamType::Live) => Some(true),
                Some(StreamType::Vod) => Some(false),
                None => crate::live::directives(request.query.as_deref())
                    .is_ok_and(|d| d.blocks())
                    .then_some(true),
            };
            let value = cmsd::static_header(&Static {
                object_type: cmsd::object_type(&request.path, cmcd_ot),
                format: cmsd::streaming_format(&request.path),
                live,
                prefetched,
            });
            headers.insert(HeaderName::from_static(cmsd::STATIC), value);
        }
        if self.cmsd.send_dynamic {
            let duress = self.engine.load().is_high();
            let value = match parts.extensions.get::<ConnSocket>() {
                Some(socket) => socket.dynamic_header(&self.cmsd_name, duress, Instant::now()),
                // HTTP/3: the QUIC stack's view of the path, when the listener gave it.
                None => {
                    let path = parts.extensions.get::<QuicPath>().map(QuicPath::estimate);
                    cmsd::dynamic_header(&self.cmsd_name, &Dynamic::from_estimate(path, duress))
                }
            };
            headers.insert(HeaderName::from_static(cmsd::DYNAMIC), value);
        }
    }
}
