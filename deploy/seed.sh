#!/bin/sh
# Adds compose.yml's two simulated cameras through the API unless cameras exist already.
set -eu
api=http://signal:8080/api/v1
token=$(curl -sf -X POST "$api/login" -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" | sed -E 's/.*"token":"([^"]+)".*/\1/')
if curl -sf "$api/cameras" -H "authorization: Bearer $token" | grep -q '"id"'; then
  echo "cameras exist already"
  exit 0
fi
for cam in "Front door:front:true" "Yard:yard:false"; do
  name=${cam%%:*}; rest=${cam#*:}; path=${rest%%:*}; rec=${rest#*:}
  curl -sf -X POST "$api/cameras" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' \
    -d "{\"name\":\"$name\",\"url\":\"rtsp://camsim:8554/$path\",\"recording\":$rec}"
  echo
done
