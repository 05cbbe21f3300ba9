import streamlit as st

st.title('datasets')
st.info('Not built yet.')
