# curl fetches a file from `python3 -m http.server`, both in one sandbox.
# Prints "fetched identical: N bytes" when the bytes match.
set -eu
port=47180
dir=$(mktemp -d)
cd "$dir"
head -c 300000 /dev/urandom > blob.bin
printf 'hello from the sandbox\n' > hello.txt
python3 -m http.server --bind 127.0.0.1 "$port" > server.log 2>&1 &
server=$!
i=0
until curl -s -o /dev/null "http://127.0.0.1:$port/hello.txt"; do
    i=$((i + 1))
    if [ "$i" -ge 100 ]; then
        echo "server never answered on port $port"
        cat server.log
        exit 1
    fi
    sleep 0.1
done
curl -sS -o fetched.bin "http://127.0.0.1:$port/blob.bin"
cmp blob.bin fetched.bin
echo "fetched identical: $(wc -c < fetched.bin) bytes"
text=$(curl -sS "http://127.0.0.1:$port/hello.txt")
echo "hello.txt: $text"
kill "$server"
wait "$server" 2>/dev/null || true
cd /
rm -rf "$dir"
